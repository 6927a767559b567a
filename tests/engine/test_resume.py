"""Resume from last.pt reaches bit-identical results, also from the middle of an epoch: on the CPU,
and on CUDA with ``deterministic = true`` (the gpu twin)."""

from __future__ import annotations

import threading

import pytest
import torch

from engine.plugins import TrainPlugin
from engine.sinks import ListSink
from engine.train import run
from tests.engine.engine_helpers import tiny_config
from tests.engine.gpu_helpers import DEVICES, on


class StopAt(TrainPlugin):
    """Sets the run's stop flag after ``steps`` optimiser steps (a SIGTERM mid-epoch)."""

    name = "stop_at"

    def __init__(self, stop: threading.Event, steps: int) -> None:
        self.stop, self.left = stop, steps

    def after_step(self, model, optimizer, batch):
        self.left -= 1
        if self.left == 0:
            self.stop.set()


def final_state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("overrides", "stop_after"),
    [
        ({}, 4),  # mid-epoch 1 (3 steps per epoch)
        (
            {"sampler": {"name": "class_aware", "num_samples_cls": 2}, "data": {"imbalance_ratio": 4}},
            3,
        ),  # epoch end
        (
            {"precision": "fp32", "schedule": {"name": "warmup_step", "warmup_epochs": 2, "milestones": [2]}},
            7,
        ),
    ],
)
def test_resume_is_bit_identical(tmp_path, monkeypatch, overrides, stop_after, device):
    cfg = tiny_config(epochs=4, **overrides, **on(device))
    reference = ListSink()
    assert run(cfg, tmp_path / "ref", reference) == "completed"

    stop = threading.Event()
    monkeypatch.setattr("engine.train.build_plugins", lambda c: [StopAt(stop, stop_after)])
    first = ListSink()
    assert run(cfg, tmp_path / "cut", first, stop=stop) == "stopped"
    assert first.events[-1]["status"] == "stopped"
    cut = final_state(tmp_path / "cut")
    assert cut["epoch"] * 3 + cut["step_in_epoch"] == stop_after  # 3 steps per epoch

    monkeypatch.setattr("engine.train.build_plugins", lambda c: [])
    second = ListSink()
    assert run(cfg, tmp_path / "cut", second, resume=True) == "completed"

    ref_state, res_state = final_state(tmp_path / "ref"), final_state(tmp_path / "cut")
    for key, value in ref_state["model"].items():
        assert torch.equal(value, res_state["model"][key]), key
    ref_epochs = {e["epoch"]: e for e in reference.of_type("epoch")}
    for e in first.of_type("epoch") + second.of_type("epoch"):
        assert e["eval"] == ref_epochs[e["epoch"]]["eval"]
        assert e["train"] == ref_epochs[e["epoch"]]["train"]
    ref_summary, res_summary = reference.events[-1]["summary"], second.events[-1]["summary"]
    for key in ("best_acc1", "best_epoch", "last_acc1", "acc5", "epochs_done"):
        assert ref_summary[key] == res_summary[key]
