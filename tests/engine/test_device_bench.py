"""``python -m engine bench``: fp16 is timed with loss scaling, and the doctor bench gets --precision."""

from __future__ import annotations

import json

import pytest
import torch

from engine import bench
from tests.engine.engine_helpers import tiny_config  # noqa: F401  (one thread, as every engine test)


def test_fp16_is_timed_with_a_grad_scaler_and_the_doctor_bench_gets_the_precision(monkeypatch, capsys):
    scaled = []
    real_scale = torch.amp.GradScaler.scale

    def scale(self, outputs):
        scaled.append(outputs.shape)
        return real_scale(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", scale)
    doctor_args = {}
    import engine.doctor.bench as doctor_bench

    monkeypatch.setattr(doctor_bench, "bench_doctor", lambda *a, **k: doctor_args.update(k) or {"ok": True})
    argv = ["--batch-size", "8", "--steps", "2", "--repeats", "1", "--image-size", "8", "--device", "cpu"]
    assert bench.bench_main([*argv, "--precision", "fp16,fp32", "--doctor"]) == 0
    out = json.loads(capsys.readouterr().out)
    fp16, fp32 = out["results"]["fp16"], out["results"]["fp32"]
    assert "error" not in fp16 and fp16["grad_scaler"] is True and fp32["grad_scaler"] is False
    assert len(scaled) >= 2 * 2  # bare and loop steps of fp16 went through the scaler
    assert doctor_args["precision"] == "fp16" and doctor_args["device"] == "cpu"


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_doctor_bench_resolves_auto(monkeypatch, capsys, precision):
    import engine.doctor.bench as doctor_bench

    seen = {}
    monkeypatch.setattr(doctor_bench, "bench_doctor", lambda *a, **k: seen.update(k) or {})
    monkeypatch.setattr(bench, "bench_precision", lambda *a, **k: {})
    assert bench.bench_main(["--device", "cpu", "--precision", precision, "--doctor"]) == 0
    capsys.readouterr()
    assert seen["precision"] in ("bf16", "fp32")  # never "auto": the doctor bench takes a dtype


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_a_bench_that_measures_nothing_fails(capsys):
    assert bench.bench_main(["--device", "cuda", "--precision", "fp32", "--steps", "1"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert "no CUDA device is visible" in out["results"]["fp32"]["error"]
