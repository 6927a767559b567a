"""Issue #15 methods end to end through the engine on the embedded ``digits`` data (one epoch each):
cRT from a CE checkpoint, LWS, a tau-norm sweep, MiSLAS stage 1 (mixup) -> stage 2, cutmix, rotation,
and an exact resume of a mixed epoch."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from engine.decoupled import tau_normalised
from engine.schema.validate import from_dict
from engine.sinks import ListSink
from engine.train import run
from tests.engine.engine_helpers import tiny_config
from tests.engine.test_resume import StopAt

DIGITS = {"name": "digits", "imbalance_ratio": 10, "image_size": 8, "num_workers": 0}
BALANCED = {"sampler": {"name": "class_aware", "num_samples_cls": 4, "epoch_length": "dataset"}}


def digits_config(**overrides):
    """tiny_config's run on long-tailed ``digits`` at 8 px (tiny_config would merge in its synthetic
    data keys, which digits does not take)."""
    raw = {"device": "cpu", "epochs": 1, "batch_size": 64, **overrides}
    data = raw.pop("data", DIGITS)
    return dataclasses.replace(tiny_config(**raw), data=from_dict({"data": data}).data)


def _model(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")["model"]


def _backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("linear.")}


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A CE run with mixup (MiSLAS stage 1): the `from` checkpoint of every second stage below."""
    root = tmp_path_factory.mktemp("stage1")
    sink = ListSink()
    assert run(digits_config(mix={"method": "mixup", "alpha": 1.0}), root, sink) == "completed", sink.events[
        -1
    ]
    return root / "checkpoints" / "best.pt"


def _run(cfg, path) -> ListSink:
    sink = ListSink()
    status = run(cfg, path, sink)
    assert status == "completed", sink.events[-1]
    return sink


def test_crt_retrains_a_fresh_classifier_on_a_frozen_backbone(stage1, tmp_path) -> None:
    cfg = digits_config(
        init_checkpoint=str(stage1), decouple={"train": "classifier", "reset_classifier": True}, **BALANCED
    )
    _run(cfg, tmp_path)
    before, after = _model(stage1), _model(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.equal(v, after[k]) for k, v in _backbone(before).items())  # incl. BN statistics
    assert not torch.equal(before["linear.weight"], after["linear.weight"])


def test_lws_learns_scales_only(stage1, tmp_path) -> None:
    _run(digits_config(init_checkpoint=str(stage1), decouple={"train": "lws"}, **BALANCED), tmp_path)
    before, after = _model(stage1), _model(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(after["linear.scales"], torch.ones_like(after["linear.scales"]))


def test_tau_norm_sweep_evaluates_each_tau_without_training(stage1, tmp_path, monkeypatch) -> None:
    import engine.train as train_mod

    train_loaders = []
    real = train_mod.make_loader

    def counting(*args, **kwargs):
        if kwargs.get("train_transform"):
            train_loaders.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "make_loader", counting)
    sink = _run(
        digits_config(epochs=3, init_checkpoint=str(stage1), tau_norm={"taus": [0.0, 1.0, 2.0]}), tmp_path
    )
    epochs = [e for e in sink.events if e["type"] == "epoch"]
    assert len(epochs) == 3 and all(e["train"]["loss"] == 0 for e in epochs)
    assert train_loaders == []  # not one pass over the training data
    logs = [e["msg"] for e in sink.events if e["type"] == "log" and "tau_norm:" in e["msg"]]
    assert logs == [f"tau_norm: epoch {i} evaluates tau = {t}" for i, t in enumerate(("0", "1", "2"))]
    before = _model(stage1)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True, map_location="cpu")
    tau = (0.0, 1.0, 2.0)[best["epoch"] - 1]
    assert torch.allclose(best["model"]["linear.weight"], tau_normalised(before["linear.weight"], tau))
    assert torch.equal(best["model"]["linear.bias"], torch.zeros_like(before["linear.bias"]))
    assert all(torch.equal(v, best["model"][k]) for k, v in _backbone(before).items())


def test_mislas_stage2_shifts_bn_statistics_with_label_aware_smoothing(stage1, tmp_path) -> None:
    cfg = digits_config(
        init_checkpoint=str(stage1),
        decouple={"train": "classifier+lws", "bn": "shift", "classifier_lr_factor": 0.5},
        loss={"name": "label_aware_smoothing", "smooth_head": 0.3, "smooth_tail": 0.0},
        **BALANCED,
    )
    _run(cfg, tmp_path)
    before, after = _model(stage1), _model(tmp_path / "checkpoints" / "last.pt")
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert "bn1.running_mean" in changed and "linear.weight" in changed
    assert not any("conv" in k or k.endswith(("bn1.weight", "bn1.bias", "bn2.weight")) for k in changed)


@pytest.mark.parametrize(
    "extra", [{"mix": {"method": "cutmix", "prob": 0.5}}, {"data": {**DIGITS, "rotation_degrees": 15}}]
)
def test_cutmix_and_rotation_runs_complete(tmp_path, extra) -> None:
    _run(digits_config(**extra), tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        {"mix": {"method": "mixup", "alpha": 0.4}},
        {"mix": {"method": "cutmix"}, "data": {"rotation_degrees": 20}},
    ],
)
def test_a_mixed_epoch_resumes_bit_identically_mid_epoch(tmp_path, monkeypatch, overrides) -> None:
    cfg = tiny_config(device="cpu", epochs=2, **overrides)  # 3 steps per epoch
    _run(cfg, tmp_path / "whole")
    stop = threading.Event()
    monkeypatch.setattr("engine.train.build_plugins", lambda c: [StopAt(stop, 4)])  # mid-epoch 1
    assert run(cfg, tmp_path / "cut", ListSink(), stop=stop) == "stopped"
    monkeypatch.undo()
    assert run(cfg, tmp_path / "cut", ListSink(), resume=True) == "completed"
    whole = _model(tmp_path / "whole" / "checkpoints" / "last.pt")
    cut = _model(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert all(torch.equal(v, cut[k]) for k, v in whole.items())


METHODS_TOML = """
[defaults]
epochs = 1
batch_size = 64
device = "cpu"
step_events_per_second = 0
data = { name = "digits", imbalance_ratio = 10, image_size = 8, num_workers = 0 }

[experiment.ce]
description = "plain CE: the `from` of cRT, LWS and tau-norm"

[experiment.crt]
from = "ce"
decouple = { train = "classifier", reset_classifier = true }
sampler = { name = "class_aware", num_samples_cls = 4, epoch_length = "dataset" }

[experiment.lws]
from = "ce"
decouple = { train = "lws" }
sampler = { name = "class_aware", num_samples_cls = 4, epoch_length = "dataset" }

[experiment.tau]
from = "ce"
epochs = 3
tau_norm = { taus = [0.0, 1.0, 2.0] }

[experiment.mislas1]
mix = { method = "mixup", alpha = 1.0 }

[experiment.mislas2]
from = "mislas1"
decouple = { train = "classifier+lws", bn = "shift", classifier_lr_factor = 0.5 }
loss = { name = "label_aware_smoothing", smooth_head = 0.3, smooth_tail = 0.0 }
sampler = { name = "class_aware", num_samples_cls = 4, epoch_length = "dataset" }

[experiment.cutmix]
mix = { method = "cutmix", alpha = 1.0, prob = 0.5 }
"""


def test_a_methods_experiments_file_validates_and_every_experiment_runs(tmp_path) -> None:
    """Registry level: `mdtui validate`'s loader accepts the method keys and `from` chains, and each
    experiment's engine config (as the launcher writes it) runs to completion on digits."""
    from mdtui.registry.plan import engine_config, load_plan

    (tmp_path / "experiments.toml").write_text(METHODS_TOML)
    plan = load_plan(tmp_path / "experiments.toml", env={})
    best: dict[str, str] = {}
    for name, exp in plan.experiments.items():  # file order: upstreams first
        init = best[exp.upstream] if exp.upstream else None
        raw = engine_config(plan, exp, run_id=name, seed=0, init_checkpoint=init)
        _run(from_dict(raw), tmp_path / name)
        best[name] = str(tmp_path / name / "checkpoints" / "best.pt")
    assert list(best) == ["ce", "crt", "lws", "tau", "mislas1", "mislas2", "cutmix"]


def test_a_stopped_tau_sweep_resumes_where_it_stopped(stage1, tmp_path) -> None:
    cfg = digits_config(epochs=3, init_checkpoint=str(stage1), tau_norm={"taus": [0.0, 1.0, 2.0]})
    whole = _run(cfg, tmp_path / "whole")
    stop = threading.Event()

    class StopAfterFirstEpoch(ListSink):
        def emit(self, type_, **fields):
            if type_ == "epoch":
                stop.set()
            return super().emit(type_, **fields)

    assert run(cfg, tmp_path / "cut", StopAfterFirstEpoch(), stop=stop) == "stopped"
    resumed = ListSink()
    assert run(cfg, tmp_path / "cut", resumed, resume=True) == "completed"
    taus = [e["msg"] for e in resumed.events if e["type"] == "log" and "tau_norm:" in e["msg"]]
    assert taus == ["tau_norm: epoch 1 evaluates tau = 1", "tau_norm: epoch 2 evaluates tau = 2"]
    acc = [e["eval"]["acc1"] for e in whole.events if e["type"] == "epoch"]
    assert [e["eval"]["acc1"] for e in resumed.events if e["type"] == "epoch"] == acc[1:]
    a = _model(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = _model(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert all(torch.equal(v, b[k]) for k, v in a.items())
