"""A non-finite loss fails the run naming epoch and step, or skips the batch by key."""

from __future__ import annotations

import pytest
import torch

from engine.plugins import TrainPlugin
from engine.sinks import ListSink
from engine.train import run
from tests.engine.engine_helpers import tiny_config
from tests.engine.gpu_helpers import needs_cuda


class NanAt(TrainPlugin):
    """Adds NaN to the loss at the ``at``-th batch (0-based, counted over the run)."""

    name = "nan_at"

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def loss_terms(self, logits, batch):
        self.seen += 1
        value = float("nan") if self.seen - 1 == self.at else 0.0
        return {"poison": logits.sum() * 0 + value}


def test_fail_names_epoch_and_step(tmp_path, monkeypatch):
    monkeypatch.setattr("engine.train.build_plugins", lambda cfg: [NanAt(4)])
    sink = ListSink()
    assert run(tiny_config(), tmp_path, sink) == "failed"
    finished = sink.events[-1]
    assert finished["status"] == "failed"
    assert "epoch 1, step 1" in finished["error"] and "non-finite" in finished["error"]
    assert len(sink.of_type("epoch")) == 1
    # last.pt is the intact one of epoch 0
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point()
    )


def test_skip_skips_the_batch_and_logs(tmp_path, monkeypatch):
    monkeypatch.setattr("engine.train.build_plugins", lambda cfg: [NanAt(1)])
    sink = ListSink()
    assert run(tiny_config(nonfinite="skip", epochs=1), tmp_path, sink) == "completed"
    train = sink.of_type("epoch")[0]["train"]
    assert train["skipped"] == 1
    assert any("non-finite" in e["msg"] for e in sink.of_type("log"))
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def _fused_optimizer(model, cfg):
    """engine/optim.py's optimiser as CUDA builds it (fused), here on the CPU, which fused SGD supports."""
    from engine.optim import param_groups

    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, fused=True)


def test_fused_optimiser_skips_a_non_finite_step_on_the_device(tmp_path, monkeypatch):
    """The CUDA path: no per-step host check; the fused step is skipped through found_inf and the
    epoch reports it, and the weights equal those of the host-checked skip."""
    monkeypatch.setattr("engine.train.build_plugins", lambda cfg: [NanAt(1)])
    host = ListSink()
    assert run(tiny_config(nonfinite="skip", epochs=1), tmp_path / "host", host) == "completed"
    monkeypatch.setattr("engine.train.build_plugins", lambda cfg: [NanAt(1)])
    monkeypatch.setattr("engine.train.build_optimizer", _fused_optimizer)
    device = ListSink()
    assert run(tiny_config(nonfinite="skip", epochs=1), tmp_path / "device", device) == "completed"
    train = device.of_type("epoch")[0]["train"]
    assert train["skipped"] == 1
    assert train["loss"] == host.of_type("epoch")[0]["train"]["loss"]  # the skipped batch is not counted
    assert any("skipped 1 batch" in e["msg"] and "step 1" in e["msg"] for e in device.of_type("log"))
    weights = [
        torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"]
        for name in ("host", "device")
    ]
    # Same process, data and gradients; only the update differs (one fused elementwise kernel vs
    # separate ops), by a rounding or two per step and element, never a reduction: a few float32 ulps
    # of the weights (~1e-7 at magnitude 1) after the epoch's two applied steps.
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=1e-6, rtol=1e-6)


def test_fused_optimiser_fails_at_the_end_of_the_epoch_naming_the_step(tmp_path, monkeypatch):
    monkeypatch.setattr("engine.train.build_plugins", lambda cfg: [NanAt(4)])
    monkeypatch.setattr("engine.train.build_optimizer", _fused_optimizer)
    sink = ListSink()
    assert run(tiny_config(), tmp_path, sink) == "failed"
    assert "epoch 1, step 1" in sink.events[-1]["error"]
    assert len(sink.of_type("epoch")) == 1  # epoch 1 never reports
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1  # the intact checkpoint of epoch 0


@pytest.mark.gpu
@needs_cuda
def test_cuda_training_steps_make_no_host_sync(tmp_path):
    """The hot path on CUDA (fused optimiser, device-side non-finite guard, no step events) runs a
    whole epoch under torch.cuda.set_sync_debug_mode("error"); only settling the epoch reads back."""
    import threading

    from engine.data.loader import Placement, make_loader
    from engine.loop import TrainParts, device_guard, train_one_epoch
    from engine.sinks import NullSink
    from engine.train import Trainer

    trainer = Trainer(tiny_config(device="cuda", precision="fp32"), tmp_path, NullSink(), threading.Event())
    trainer.setup(resume=False)
    assert device_guard(trainer.optimizer, trainer.scaler)
    loader = make_loader(
        trainer.data,
        trainer.data.train,
        batch_size=16,
        train_transform=True,
        shuffle=True,
        placement=Placement(trainer.runtime.device, num_workers=0),
    )
    batches = list(loader.batches(0))  # building batches may copy to the device: not the step's cost
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        parts = TrainParts(
            trainer.forward, trainer.criterion, trainer.optimizer, trainer.runtime, sink=NullSink()
        )
        outcome = train_one_epoch(parts, batches, epoch=0, lr=0.05)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert outcome.meters.result()["loss"] > 0
