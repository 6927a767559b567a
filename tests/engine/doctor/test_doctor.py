"""Model Doctor: masks, channel/spatial losses, noise, sift and cache against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from engine.doctor.constraint import (
    ChannelConstraint,
    ConstrainedLayer,
    channel_loss_terms,
    pseudo_labels,
    spatial_loss,
)
from engine.doctor.diagnose import diagnose
from engine.doctor.masks import combine_masks, layer_energies, target_score, threshold_mask
from engine.doctor.sift import TopPerClass, sift_keys
from tests.engine.doctor_helpers import TinyNet, fake_context, one_thread

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

# TinyNet samples: x0 is misclassified (label 0, predicted 1), x1 misclassified, x2 correct.
X = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0]]).view(3, 1, 1, 2)
Y = torch.tensor([0, 1, 1])
MASK = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def _grads(model: TinyNet, x: torch.Tensor, targets: torch.Tensor, scaling: str) -> torch.Tensor:
    feats = {}
    handle = model.conv.register_forward_hook(lambda _m, _i, out: feats.setdefault("a", out))
    logits = model(x)
    handle.remove()
    return torch.autograd.grad(target_score(logits, targets, scaling), feats["a"])[0]


def test_repo_scaling_is_exactly_one_over_batch() -> None:
    model = TinyNet()
    per_sample = _grads(model, X, Y, "per_sample")
    repo = _grads(model, X, Y, "repo")
    assert torch.equal(repo * 3, per_sample)
    # per-sample gradient of sample 0 is V[y_0] laid out as [k, w]
    assert torch.equal(per_sample[0, :, 0, :], torch.tensor([[1.0, -2.0], [3.0, 0.5]]))


@pytest.mark.parametrize(
    ("source", "phi", "expected"),
    [
        ("grad", "abs", [[3.0, 3.5], [5.0, 2.5], [5.0, 2.5]]),
        ("grad", "relu", [[1.0, 3.5], [4.0, 2.0], [4.0, 2.0]]),
        # gradients where A >= 0 only: A_b = [x_b, -2 x_b]
        ("grad_pos_act", "abs", [[3.0, 0.0], [4.0, 0.5], [1.0, 2.0]]),
        ("act", "abs", [[3.0, 6.0], [1.5, 3.0], [3.0, 6.0]]),
        ("relu_act", "relu", [[3.0, 0.0], [0.5, 2.0], [2.0, 2.0]]),
    ],
)
def test_channel_energies_by_hand(source: str, phi: str, expected: list[list[float]]) -> None:
    model = TinyNet().eval()
    _, energies = layer_energies(
        model, {"conv": model.conv}, X, Y, source=source, phi=phi, scaling="per_sample"
    )
    assert torch.allclose(energies["conv"], torch.tensor(expected))
    _, repo = layer_energies(model, {"conv": model.conv}, X, Y, source=source, phi=phi, scaling="repo")
    factor = 3.0 if source.startswith("grad") else 1.0
    assert torch.allclose(repo["conv"] * factor, torch.tensor(expected))


def test_thresholds_and_set_operations_exact() -> None:
    v = torch.tensor([[1.0, 2.0, 3.0, 2.0], [0.0, 0.0, 4.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    # row means 2, 1, 5: ">=" keeps the ties, ">" drops them
    assert threshold_mask(v, "mean").tolist() == [
        [False, True, True, True],
        [False, False, True, False],
        [True] * 4,
    ]
    assert threshold_mask(v, "gt_mean").tolist() == [
        [False, False, True, False],
        [False, False, True, False],
        [False] * 4,
    ]
    # minmax: (v - min) / (max - min + 1e-5) > theta; a constant row selects nothing
    assert threshold_mask(v, "minmax", theta=0.5).tolist() == [
        [False, False, True, False],
        [False, False, True, False],
        [False] * 4,
    ]
    row = torch.tensor([[1.0, 2.0, 3.0]])
    assert threshold_mask(row, "minmax", theta=0.49).tolist() == [[False, True, True]]
    assert threshold_mask(row, "minmax", theta=0.5).tolist() == [[False, False, True]]  # 1/(2+1e-5) < 0.5
    # topk r keeps values >= the (r+1)-th largest
    assert threshold_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), "topk", topk=1).tolist() == [
        [True, False, True, False]
    ]
    a = torch.tensor([[True, False, True, False]])
    b = torch.tensor([[True, True, False, False]])
    assert combine_masks(a, b, "union").tolist() == [[True, True, True, False]]
    assert combine_masks(a, b, "intersection").tolist() == [[True, False, False, False]]


def test_pseudo_labels_rank2_when_right_rank1_when_wrong() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 0.0, 9.0]])
    labels = torch.tensor([0, 2, 2])
    assert pseudo_labels(logits, labels).tolist() == [2, 1, 0]


@pytest.mark.parametrize(
    ("psi", "gating", "scaling", "high", "low"),
    [
        ("abs", "none", "per_sample", 8.5 / 3, 13.5 / 3),
        ("abs", "none", "repo", 8.5 / 9, 13.5 / 9),
        ("relu", "none", "per_sample", 4 / 3, 11.5 / 3),
        ("relu_plus_negall", "none", "per_sample", 9.5 / 3, 16.5 / 3),
        ("abs", "pos_act", "per_sample", 1.0, 5 / 3),
    ],
)
def test_channel_loss_terms_by_hand(psi: str, gating: str, scaling: str, high: float, low: float) -> None:
    model = TinyNet()
    feats = {}
    handle = model.conv.register_forward_hook(lambda _m, _i, out: feats.setdefault("a", out))
    logits = model(X)
    handle.remove()
    rivals = pseudo_labels(logits, Y)
    assert rivals.tolist() == [1, 0, 0]
    g_true = torch.autograd.grad(target_score(logits, Y, scaling), feats["a"], create_graph=True)[0]
    g_rival = torch.autograd.grad(target_score(logits, rivals, scaling), feats["a"], create_graph=True)[0]
    got_high, got_low = channel_loss_terms(
        g_true, g_rival, feats["a"], MASK, Y, rivals, psi=psi, gating=gating
    )
    assert got_high.item() == pytest.approx(high)
    assert got_low.item() == pytest.approx(low)


def test_channel_loss_gradient_reaches_the_weights_by_double_backprop() -> None:
    model = TinyNet()
    constraint = ChannelConstraint([ConstrainedLayer("conv", model.conv, MASK)], weight=2.0, psi="abs")
    constraint.set_training(True)
    logits = model(X)
    terms = constraint.loss_terms(logits, Y)
    assert terms["channel"].item() == pytest.approx(2.0 * (8.5 + 13.5) / 3)
    terms["channel"].backward()
    expected = 2.0 * torch.tensor([[2.0, -2.0, 1.0, 1.0], [-2.0, 2.0, -1.0, 1.0]]) / 3
    assert torch.allclose(model.fc.weight.grad, expected)


def test_spatial_loss_by_hand() -> None:
    model = TinyNet()
    g_true = _grads(model, X, Y, "per_sample")
    fg = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]).view(3, 1, 1, 2)
    assert spatial_loss(g_true, fg, beta=0.5).item() == pytest.approx(0.5 * (2.5 + 7.5))


class TwoConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)).flatten(1)


def test_noise_only_in_training_and_removed_for_every_layer() -> None:
    torch.manual_seed(0)
    model = TwoConv()
    x = torch.randn(4, 1, 3, 3)
    clean = model(x).detach()
    masks = torch.ones(2, 2)
    constraint = ChannelConstraint(
        [ConstrainedLayer("a", model.a, masks), ConstrainedLayer("b", model.b, masks)],
        weight=1.0,
        noise_std=1.0,
    )
    constraint.set_training(True)
    assert len(model.a._forward_hooks) == 2 and len(model.b._forward_hooks) == 2
    assert not torch.allclose(model(x), clean)
    constraint.set_training(False)
    assert len(model.a._forward_hooks) == 1 and len(model.b._forward_hooks) == 1
    assert torch.equal(model(x).detach(), clean)
    constraint.remove()
    assert not model.a._forward_hooks and not model.b._forward_hooks


def _brute_force_top(keys: torch.Tensor, labels: torch.Tensor, c: int, n: int) -> list[int]:
    members = [i for i in range(len(labels)) if labels[i] == c and keys[i] > float("-inf")]
    return sorted(members, key=lambda i: (-keys[i].item(), i))[:n]


@pytest.mark.parametrize("mode", ["high", "low"])
def test_streaming_sift_equals_brute_force(mode: str) -> None:
    gen = torch.Generator().manual_seed(1)
    num, classes, keep = 90, 4, 5
    logits = torch.randn(num, classes, generator=gen) * 3
    labels = torch.randint(0, classes, (num,), generator=gen)
    top = TopPerClass(classes, keep)
    for start in range(0, num, 7):
        sl = slice(start, start + 7)
        key, score = sift_keys(logits[sl], labels[sl], mode)
        idx = torch.arange(num)[sl]
        top.update(key, score, labels[sl], idx, payload=idx.float().unsqueeze(1).repeat(1, 3))
    result = top.result()
    all_keys, all_scores = sift_keys(logits, labels, mode)
    for c in range(classes):
        expected = _brute_force_top(all_keys, labels, c, keep)
        got = [i for i in result.index[c].tolist() if i >= 0]
        assert got == expected
        assert torch.equal(result.score[c, : len(got)], all_scores[expected])
        assert torch.equal(result.payload[c, : len(got), 0], torch.tensor(expected, dtype=torch.float))
    if mode == "low":  # misclassified first (negative scores)
        assert (result.score[result.valid] < 1).all()


def test_sift_keeps_fewer_when_a_class_has_few_correct() -> None:
    logits = torch.tensor([[5.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])  # class 1 has one correct sample
    top = TopPerClass(2, 2)
    top.update(*sift_keys(logits, labels, "high"), labels, torch.arange(3))
    assert top.result().index.tolist() == [[0, -1], [2, -1]]


def _doctor_config(**doctor) -> dict:
    return {"model": "resnet32", "data": {"name": "synthetic", "num_classes": 3}, "doctor": doctor}


def test_diagnosis_is_cached_for_sibling_runs(tmp_path) -> None:
    model = TinyNet().eval()
    x = torch.randn(40, 1, 1, 2, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    layers = {"conv": model.conv}
    from engine.schema.config import SiftConfig

    sift = SiftConfig(per_class=4, batch_size=8)
    kw = dict(sift=sift, source="grad", phi="abs", scaling="per_sample", wrt="output", cache_kind="doctor")
    first = fake_context(tmp_path, model, _doctor_config(), x, y, num_classes=2, run="a")
    r1, e1, hit1 = diagnose(first, layers, **kw)
    second = fake_context(tmp_path, model, _doctor_config(weight=1.0), x, y, num_classes=2, run="b")
    r2, e2, hit2 = diagnose(second, layers, **kw)
    assert (hit1, hit2) == (False, True)
    assert second.loader_calls == 0
    assert torch.equal(r1.index, r2.index) and torch.equal(e1["conv"], e2["conv"])
    # energies are the per-class sums of the kept samples' |V[y]| rows: 4 samples each
    assert torch.allclose(e1["conv"], 4 * torch.tensor([[3.0, 3.5], [5.0, 2.5]]))
    other = diagnose(second, layers, **{**kw, "phi": "relu"})
    assert other[2] is False  # different settings diagnose again


def test_doctor_plugin_on_resnet32(tmp_path) -> None:
    from engine.doctor import build_doctor
    from engine.models import build_model
    from engine.schema.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig("resnet32"), 3, 3)
    x = torch.randn(24, 3, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    config = _doctor_config(
        layers=["last_conv"], init="scratch", noise_std=1.0, sift={"per_class": 4, "batch_size": 12}
    )
    ctx = fake_context(tmp_path, model, config, x, y, num_classes=3, batch_size=12)
    plugin = build_doctor(ctx.cfg)
    before = model.linear.weight.detach().clone()
    plugin.setup(ctx)
    assert not torch.equal(before, model.linear.weight)  # init = scratch re-initialised after diagnosis
    kinds = [f["kind"] for t, f in ctx.events if t == "artifact"]
    assert {"channel_mask", "channel_energy", "image_list", "plot"} <= set(kinds)
    assert all(f["summary"]["leaky"] is False for _, f in ctx.events)
    mask = np.load(tmp_path / "run" / "artifacts" / "doctor" / "mask_layer3.4.conv2.npy")
    assert mask.shape == (3, 64) and mask.dtype == bool
    sift = json.loads((tmp_path / "run" / "artifacts" / "doctor" / "sift.json").read_text())
    assert sum(len(c["images"]) for c in sift["classes"]) <= 12
    model.train()
    plugin.set_training(True)
    logits = model(x[:8])
    terms = plugin.loss_terms(logits, type("B", (), {"labels": y[:8], "masks": None})())
    assert terms["channel"].item() > 0
    terms["channel"].backward()
    assert model.layer3[4].conv2.weight.grad is not None
    plugin.set_training(False)
    assert plugin.loss_terms(model(x[:8]), type("B", (), {"labels": y[:8], "masks": None})()) == {}


@pytest.mark.slow
def test_doctor_runs_end_to_end_through_the_engine(tmp_path) -> None:
    from engine.sinks import ListSink
    from engine.train import run
    from tests.engine.engine_helpers import tiny_config

    assert run(tiny_config(epochs=1), tmp_path / "base", ListSink()) == "completed"
    upstream = str(tmp_path / "base" / "checkpoints" / "best.pt")
    doctor = {"preset": "fork", "layers": ["last_conv"], "sift": {"per_class": 4, "batch_size": 16}}
    sinks = []
    for name, weight in (("md", 1.0), ("md2", 0.5)):
        sink = ListSink()
        cfg = tiny_config(
            epochs=1,
            init_checkpoint=upstream,
            cache_dir=str(tmp_path / "cache"),
            doctor={**doctor, "weight": weight},
        )
        assert run(cfg, tmp_path / name, sink) == "completed", sink.events[-1]
        sinks.append(sink)
    train = sinks[0].of_type("epoch")[0]["train"]
    assert train["loss_channel"] > 0 and "loss_cls" in train
    masks = [e for e in sinks[0].of_type("artifact") if e["kind"] == "channel_mask"]
    assert masks and masks[0]["summary"]["cache"] == "miss" and masks[0]["summary"]["leaky"] is False
    sibling = [e for e in sinks[1].of_type("artifact") if e["kind"] == "channel_mask"]
    assert sibling[0]["summary"]["cache"] == "hit"
    assert np.array_equal(
        np.load(tmp_path / "md" / "artifacts" / "doctor" / "mask_layer3.4.conv2.npy"),
        np.load(tmp_path / "md2" / "artifacts" / "doctor" / "mask_layer3.4.conv2.npy"),
    )


def test_channel_loss_on_an_fc_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    constraint = ChannelConstraint([ConstrainedLayer("0", model[0], mask)], weight=1.0, psi="abs")
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    logits = model(x)
    terms = constraint.loss_terms(logits, y)
    # dz_t/dh = W2[t] for every sample (h is the pre-ReLU FC output, gated by the ReLU)
    hidden = model[0](x)
    g = model[2].weight.detach()[y] * (hidden > 0)
    rivals = pseudo_labels(logits, y)
    g_r = model[2].weight.detach()[rivals] * (hidden > 0)
    expected = ((g_r.abs() * mask[rivals]).sum() + (g.abs() * (1 - mask[y])).sum()) / 5
    assert terms["channel"].item() == pytest.approx(expected.item())
    terms["channel"].backward()
    assert model[2].weight.grad.abs().sum() > 0


def test_mask_combined_with_another_experiments_mask(tmp_path) -> None:
    from engine.doctor import build_doctor
    from engine.models import build_model
    from engine.schema.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig("resnet32"), 3, 3)
    x = torch.randn(12, 3, 8, 8)
    y = torch.arange(12) % 3
    sift = {"per_class": 4, "batch_size": 12, "mode": "low"}
    first = fake_context(
        tmp_path, model, _doctor_config(sift=sift), x, y, num_classes=3, batch_size=12, run="a"
    )
    build_doctor(first.cfg).setup(first)
    other = tmp_path / "a" / "artifacts" / "doctor"
    mask_cfg = {"threshold": "topk", "topk": 20, "combine_path": str(other), "combine_op": "intersection"}
    second = fake_context(
        tmp_path, model, _doctor_config(sift=sift, mask=mask_cfg), x, y, num_classes=3, batch_size=12, run="b"
    )
    plugin = build_doctor(second.cfg)
    plugin.setup(second)
    energy = torch.from_numpy(np.load(other / "energy_layer3.4.conv2.npy"))
    expected = threshold_mask(energy, "topk", topk=20) & torch.from_numpy(
        np.load(other / "mask_layer3.4.conv2.npy")
    )
    assert torch.equal(plugin.masks["layer3.4.conv2"], expected)
    missing = fake_context(
        tmp_path,
        model,
        _doctor_config(sift=sift, mask={"combine_path": str(tmp_path / "nowhere")}),
        x,
        y,
        num_classes=3,
        run="c",
    )
    from engine.doctor import DiagnosisError

    with pytest.raises(DiagnosisError, match="combine_with"):
        build_doctor(missing.cfg).setup(missing)
