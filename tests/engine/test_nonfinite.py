"""A non-finite loss fails the run naming epoch and step, or skips the batch by key."""

from __future__ import annotations

import torch

from engine.plugins import TrainPlugin
from engine.sinks import ListSink
from engine.train import run
from tests.engine.engine_helpers import tiny_config


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
