"""End-to-end runs on tiny synthetic data: events, checkpoints, selection, plugins, init."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.plugins import TrainPlugin
from engine.selection import Selection
from engine.sinks import ListSink
from engine.train import run
from tests.engine.engine_helpers import tiny_config as _tiny_config
from tests.engine.gpu_helpers import DEVICES, on


def tiny_config(**overrides):
    """Pinned to the CPU unless a test names its device: ``auto`` would pick CUDA on a GPU host."""
    return _tiny_config(**{"device": "cpu", **overrides})


@pytest.mark.parametrize("device", DEVICES)
def test_event_sequence_and_checkpoints(tmp_path, device):
    sink = ListSink()
    status = run(tiny_config(**on(device)), tmp_path, sink)
    assert status == "completed"
    types = [e["type"] for e in sink.events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("epoch") == 3
    assert "step" in types and types.index("step") < types.index("epoch")
    started = sink.events[0]
    assert started["total_epochs"] == 3 and started["steps_per_epoch"] == 3
    assert started["config"]["data"]["name"] == "synthetic"
    epochs = sink.of_type("epoch")
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    for e in epochs:
        assert set(e["eval"]) >= {"loss", "acc1", "acc5", "per_class", "many", "medium", "few"}
        assert 0.0 <= e["eval"]["acc1"] <= 100.0 and len(e["eval"]["per_class"]) == 3
        assert {"loss", "acc1"} <= set(e["train"]) and e["seconds"] > 0
    # each epoch writes last.pt; best.pt only on improvement, so never after a worse epoch
    ckpts = sink.of_type("checkpoint")
    assert [c["epoch"] for c in ckpts if not c["is_best"]] == [0, 1, 2]
    best_epochs = [c["epoch"] for c in ckpts if c["is_best"]]
    assert best_epochs[0] == 0
    finished = sink.events[-1]
    summary = finished["summary"]
    assert finished["status"] == "completed" and finished["error"] is None
    assert summary["best_epoch"] == best_epochs[-1]
    accs = [e["eval"]["acc1"] for e in epochs]
    assert summary["best_acc1"] == max(accs) and summary["last_acc1"] == accs[-1]
    assert summary["err1"] == pytest.approx(100 - summary["best_acc1"])
    assert summary["selected_on"] == "test" and summary["leaky"] is False and summary["epochs_done"] == 3
    for name in ("best.pt", "last.pt"):
        ck = torch.load(tmp_path / "checkpoints" / name, weights_only=True, map_location="cpu")
        assert json.loads(ck["config"])["run_id"] == "tiny"
        assert "model" in ck and "optimizer" in ck and "rng" in ck
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert last["epoch"] == 3
    confusion = json.loads((tmp_path / "artifacts" / "confusion_matrix.json").read_text())
    assert confusion["epoch"] == summary["best_epoch"] and len(confusion["matrix"]) == 3


def test_best_compare_gt_keeps_first_tie_and_ge_the_last():
    for compare, expected in (("gt", 1), ("ge", 3)):
        sel = Selection("test", compare)
        for epoch, score in enumerate([50.0, 70.0, 60.0, 70.0]):
            sel.offer(epoch, score, {"acc1": score})
        assert sel.epoch == expected and sel.test["acc1"] == 70.0


def test_selection_on_val_split(tmp_path):
    sink = ListSink()
    run(tiny_config(data={"val_fraction": 0.25}), tmp_path, sink)
    epochs = sink.of_type("epoch")
    assert all("val" in e for e in epochs)
    summary = sink.events[-1]["summary"]
    assert summary["selected_on"] == "val"
    best = max(range(3), key=lambda i: (epochs[i]["val"]["acc1"], -i))
    assert summary["best_epoch"] == best
    assert summary["best_acc1"] == epochs[best]["eval"]["acc1"]  # reported on test, chosen on val


class RecordingPlugin(TrainPlugin):
    name = "recorder"

    def __init__(self, split: bool = False) -> None:
        self.calls: list[str] = []
        self.split = split

    def setup(self, ctx):
        self.calls.append("setup")
        self.model = ctx.model

    def set_training(self, training):
        self.calls.append(f"training={training}")

    def loss_terms(self, logits, batch):
        return {"extra": 0.5 * logits.float().pow(2).mean()}

    def sub_batches(self, batch):
        if not self.split:
            return None
        half = len(batch) // 2
        return [
            type(batch)(batch.images[:half], batch.labels[:half], batch.index[:half]),
            type(batch)(batch.images[half:], batch.labels[half:], batch.index[half:]),
        ]

    def before_step(self, model, optimizer, batch):
        assert any(p.grad is not None for p in model.parameters())
        self.calls.append("before")

    def after_step(self, model, optimizer, batch):
        self.calls.append("after")


def test_plugin_hooks(tmp_path, monkeypatch):
    plugin = RecordingPlugin(split=True)
    monkeypatch.setattr("engine.train.build_plugins", lambda cfg: [plugin])
    sink = ListSink()
    assert run(tiny_config(epochs=1), tmp_path, sink) == "completed"
    assert plugin.calls[0] == "setup" and plugin.calls[1] == "training=True"
    assert plugin.calls.count("before") == plugin.calls.count("after") == 6  # 3 batches x 2 sub-batches
    assert plugin.calls[-1] == "training=False"
    train = sink.of_type("epoch")[0]["train"]
    assert train["loss"] == pytest.approx(train["loss_cls"] + train["loss_extra"], rel=1e-4)
    step = sink.of_type("step")[0]
    assert "loss_cls" in step and "loss_extra" in step


@pytest.mark.parametrize("device", DEVICES)
def test_init_checkpoint_loads_upstream_weights(tmp_path, device):
    run(tiny_config(epochs=1, **on(device)), tmp_path / "up", ListSink())
    upstream = tmp_path / "up" / "checkpoints" / "best.pt"
    seen = {}

    class Peek(TrainPlugin):
        name = "peek"

        def setup(self, ctx):
            seen.update({k: v.clone() for k, v in ctx.model.state_dict().items()})

    import engine.train as train_mod

    original = train_mod.build_plugins
    train_mod.build_plugins = lambda cfg: [Peek()]
    try:
        sink = ListSink()
        run(tiny_config(epochs=1, init_checkpoint=str(upstream), **on(device)), tmp_path / "down", sink)
    finally:
        train_mod.build_plugins = original
    state = torch.load(upstream, weights_only=True, map_location="cpu")["model"]
    assert all(torch.equal(seen[k].cpu(), v) for k, v in state.items())
    bad = ListSink()
    assert (
        run(tiny_config(epochs=1, init_checkpoint=str(tmp_path / "nope.pt")), tmp_path / "bad", bad)
        == "failed"
    )
    assert "nope.pt" in bad.events[-1]["error"]


def test_ldam_gets_a_normed_head(tmp_path):
    sink = ListSink()
    cfg = tiny_config(epochs=1, loss={"name": "ldam", "drw_epoch": 1})
    assert run(cfg, tmp_path, sink) == "completed"
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert not any(k.endswith("fc.bias") or k.endswith("linear.bias") for k in ck["model"])


def test_user_errors_are_reported_without_traceback(tmp_path, capsys):
    sink = ListSink()
    cfg = tiny_config(epochs=1)
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, name="cifar10", root=str(tmp_path / "missing"))
    )
    status = run(cfg, tmp_path, sink)
    assert status == "failed"
    assert "missing" in sink.events[-1]["error"]
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cuda_run(tmp_path, precision):
    sink = ListSink()
    assert run(tiny_config(epochs=2, device="cuda", precision=precision), tmp_path, sink) == "completed"
    assert sink.events[0]["world"]["precision"] == precision
