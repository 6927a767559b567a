"""Issue #15 long-tail methods against hand-computed values.

tau-norm weights, LWS scales, label-aware smoothing targets and loss, mixup/cutmix draws, images and
loss, cRT/LWS/MiSLAS stage-2 freezing (BN frozen vs shift), EFL v1, Model Doctor gating order and
the on-device rotation.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.data.augment import AugmentParams, crop_flip, draw_params, resolve_rotation, rotate
from engine.data.loader import Batch
from engine.decoupled import Decoupled, ScaledHead, TauNorm, tau_normalised
from engine.doctor import constraint as constraint_mod
from engine.doctor.constraint import ChannelConstraint, ConstrainedLayer
from engine.losses import build_loss
from engine.losses.efl import EqualizedFocalLoss
from engine.losses.label_smoothing import LabelAwareSmoothing, class_smoothing
from engine.mixing import EpochMixer, MixDraws, cutmix_boxes, draw_mix, mix_batches, mix_generator, mixed_loss
from engine.models import build_model
from engine.optim import build_optimizer, set_lr
from engine.schema.config import (
    DecoupleConfig,
    MixConfig,
    ModelConfig,
    OptimConfig,
    TauNormConfig,
)
from engine.schema.validate import ConfigError, from_dict

LN2 = math.log(2.0)

# --------------------------------------------------------------------------- tau-norm


def test_tau_normalised_weights_by_hand() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # row norms 5 and 2
    assert torch.equal(tau_normalised(w, 0.0), w)
    assert torch.allclose(tau_normalised(w, 1.0), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    half = torch.tensor([[3 / math.sqrt(5), 4 / math.sqrt(5)], [0.0, 2 / math.sqrt(2)]])
    assert torch.allclose(tau_normalised(w, 0.5), half)
    assert torch.allclose(tau_normalised(w, 2.0), torch.tensor([[0.12, 0.16], [0.0, 0.5]]))


def _ctx(model: nn.Module, tmp_path, optimizer=None, init="from.pt") -> SimpleNamespace:
    logs: list[str] = []
    return SimpleNamespace(
        cfg=SimpleNamespace(init_checkpoint=init),
        model=model,
        optimizer=optimizer or build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.0)),
        artifacts_dir=tmp_path,
        log=logs.append,
        logs=logs,
    )


def _tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="resnet32"), 1, 3)


def test_tau_norm_plugin_sets_each_epochs_tau_and_drops_the_bias(tmp_path) -> None:
    model = _tiny_resnet()
    w0 = model.linear.weight.detach().clone()
    plugin = TauNorm(TauNormConfig(taus=(0.0, 1.0)))
    plugin.setup(_ctx(model, tmp_path))
    assert plugin.sub_batches(object()) == []  # no optimiser step
    plugin.set_training(False)  # before epoch 0's evaluation
    assert torch.equal(model.linear.weight, w0) and torch.equal(model.linear.bias, torch.zeros(3))
    plugin.set_training(True)
    plugin.set_training(False)  # epoch 1: tau = 1, unit rows
    assert torch.allclose(model.linear.weight.norm(dim=1), torch.ones(3))
    assert torch.allclose(model.linear.weight, w0 / w0.norm(dim=1, keepdim=True))
    assert plugin.state_dict() == {"next_epoch": 2}
    assert (tmp_path / "tau_norm.json").exists()


# --------------------------------------------------------------------------- LWS / cRT / MiSLAS stage 2


def test_lws_scaled_head_forward_and_gradients_by_hand() -> None:
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        head.bias.copy_(torch.tensor([0.5, -1.0]))
    head.requires_grad_(False)
    scaled = ScaledHead(head)
    with torch.no_grad():
        scaled.scales.copy_(torch.tensor([2.0, 0.5]))
    out = scaled(torch.tensor([[1.0, 1.0]]))  # w.x + b = [3.5, 1.0]
    assert out.tolist() == [[7.0, 0.5]]
    out.sum().backward()
    assert scaled.scales.grad.tolist() == [3.5, 1.0]  # d(f_i z_i)/df_i = z_i
    assert head.weight.grad is None and head.bias.grad is None
    assert set(scaled.state_dict()) == {"weight", "bias", "scales"}


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_crt_freezes_the_backbone_and_resets_a_fresh_classifier(tmp_path) -> None:
    model = _tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _ctx(model, tmp_path)
    Decoupled(DecoupleConfig(train="classifier", reset_classifier=True, bn="frozen")).setup(ctx)
    assert _trainable(model) == {"linear.weight", "linear.bias"}
    assert not torch.equal(model.linear.weight, before["linear.weight"])  # a fresh classifier
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)  # stats frozen through model.train()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    F.cross_entropy(model(x), y).backward()
    ctx.optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"linear.weight", "linear.bias"}  # backbone and running stats untouched


def test_lws_trains_only_the_scales(tmp_path) -> None:
    model = _tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _ctx(model, tmp_path)
    Decoupled(DecoupleConfig(train="lws")).setup(ctx)
    assert _trainable(model) == {"linear.scales"}
    assert isinstance(model.linear, ScaledHead)
    model.train()
    F.cross_entropy(model(torch.randn(6, 1, 8, 8)), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    ctx.optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # w, b and the backbone frozen
    assert not torch.equal(after["linear.scales"], torch.ones(3))


def test_mislas_stage2_shift_learns_bn_statistics_not_bn_parameters(tmp_path) -> None:
    model = _tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.0))
    ctx = _ctx(model, tmp_path, optimizer)
    Decoupled(DecoupleConfig(train="classifier+lws", bn="shift", classifier_lr_factor=0.5)).setup(ctx)
    assert _trainable(model) == {"linear.weight", "linear.bias", "linear.scales"}
    set_lr(optimizer, 0.1)
    lrs = sorted(group["lr"] for group in optimizer.param_groups)
    assert lrs == [0.05, 0.1]  # classifier at lr * lr_factor, scales at lr (MiSLAS adjust_learning_rate)
    model.train()
    F.cross_entropy(model(torch.randn(6, 1, 8, 8)), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "bn1.running_mean" in changed and "layer1.0.bn1.running_var" in changed
    assert not any(k.endswith(("bn1.weight", "bn1.bias")) or "conv" in k for k in changed)
    assert {"linear.weight", "linear.bias"} <= changed


def test_second_stages_need_a_from_checkpoint(tmp_path) -> None:
    from engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="from"):
        Decoupled(DecoupleConfig()).setup(_ctx(_tiny_resnet(), tmp_path, init=None))
    with pytest.raises(CheckpointError, match="from"):
        TauNorm(TauNormConfig()).setup(_ctx(_tiny_resnet(), tmp_path, init=None))


# --------------------------------------------------------------------------- label-aware smoothing


def test_label_aware_smoothing_targets_per_class_by_hand() -> None:
    counts = torch.tensor([100.0, 10.0, 1.0])  # u = 1, 1/11, 0
    s = math.sin(math.pi / 22)
    assert class_smoothing(counts, 0.3, 0.0, "concave").tolist() == pytest.approx([0.3, 0.3 * s, 0.0])
    assert class_smoothing(counts, 0.3, 0.0, "linear").tolist() == pytest.approx([0.3, 0.3 / 11, 0.0])
    convex = [0.3, 0.3 - 0.3 * math.cos(math.pi / 22), 0.0]
    assert class_smoothing(counts, 0.3, 0.0, "convex").tolist() == pytest.approx(convex, abs=1e-7)
    assert class_smoothing(counts, 0.4, 0.1, "exp", 2.0).tolist() == pytest.approx(
        [0.4, 0.1 + 0.3 / 121, 0.1]
    )
    assert class_smoothing(torch.tensor([5.0, 5.0]), 0.3, 0.1).tolist() == pytest.approx([0.3, 0.3])


def test_label_aware_smoothing_loss_by_hand() -> None:
    loss = LabelAwareSmoothing(torch.tensor([100.0, 10.0, 1.0]), smooth_head=0.3, smooth_tail=0.0)
    logits = torch.tensor([[LN2, 0.0, 0.0], [LN2, 0.0, 0.0]])  # p = 1/2, 1/4, 1/4
    # label 0 (eps 0.3): 0.7 ln2 + 0.3 * mean(ln2, ln4, ln4) = 1.2 ln2; label 2 (eps 0): ln4
    value = loss(logits, torch.tensor([0, 2]))
    assert value.item() == pytest.approx((1.2 * LN2 + 2 * LN2) / 2)
    cfg = from_dict({"loss": {"name": "label_aware_smoothing", "smooth_head": 0.3}}).loss
    built = build_loss(cfg, [100, 10, 1], 3, 10)
    assert built(logits, torch.tensor([0, 2])).item() == pytest.approx(value.item())


# --------------------------------------------------------------------------- mixup / cutmix


def _batch(n: int = 3) -> Batch:
    images = torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2)
    return Batch(images, torch.arange(n), torch.arange(n))


def test_mixup_images_partner_and_loss_by_hand() -> None:
    draws = MixDraws(
        lam=torch.tensor([0.25], dtype=torch.float64),
        keys=torch.tensor([[0.9, 0.1, 0.5]]),  # argsort = [1, 2, 0]
        centre=torch.zeros(1, 2, dtype=torch.float64),
    )
    batch = _batch()
    mixed = EpochMixer(MixConfig(method="mixup"), draws, torch.device("cpu")).mix(batch, 0)
    perm = torch.tensor([1, 2, 0])
    assert torch.equal(mixed.partner, torch.tensor([1, 2, 0]))
    batch.global_size = 12  # a data-parallel rank's shard of a 12-sample batch: the size travels
    assert EpochMixer(MixConfig(method="mixup"), draws, torch.device("cpu")).mix(batch, 0).total == 12
    assert torch.allclose(mixed.images, 0.25 * batch.images + 0.75 * batch.images[perm])
    logits = torch.tensor([[LN2, 0.0, 0.0]] * 3)  # -log p = ln2, ln4, ln4
    criterion = nn.CrossEntropyLoss()
    # lam * CE(y_a) + (1 - lam) * CE(y_b): y_a = [0,1,2] -> mean(ln2, ln4, ln4) = 5/3 ln2,
    # y_b = [1,2,0] -> the same multiset: 5/3 ln2
    assert mixed_loss(criterion, logits, mixed).item() == pytest.approx(5 / 3 * LN2)
    logits_b = torch.tensor([[0.0, LN2, 0.0], [0.0, 0.0, LN2], [LN2, 0.0, 0.0]])
    # y_a: each -log p_y = ln4; y_b: each target is the ln2 column
    assert mixed_loss(criterion, logits_b, mixed).item() == pytest.approx(0.25 * 2 * LN2 + 0.75 * LN2)
    assert mixed_loss(criterion, logits_b, batch).item() == pytest.approx(2 * LN2)  # unmixed: plain


def test_mix_draws_are_seeded_per_epoch_and_beta_distributed() -> None:
    cfg = MixConfig(method="mixup", alpha=1.0)
    a = draw_mix(cfg, 4, 8, mix_generator(3, 1))
    b = draw_mix(cfg, 4, 8, mix_generator(3, 1))
    c = draw_mix(cfg, 4, 8, mix_generator(3, 2))
    assert torch.equal(a.lam, b.lam) and torch.equal(a.keys, b.keys)
    assert not torch.equal(a.lam, c.lam)
    many = draw_mix(cfg, 20000, 1, mix_generator(0, 0)).lam  # Beta(1, 1) = U(0, 1)
    assert many.mean().item() == pytest.approx(0.5, abs=0.01)
    assert many.var().item() == pytest.approx(1 / 12, abs=0.003)
    skewed = draw_mix(MixConfig(method="mixup", alpha=0.2), 20000, 1, mix_generator(0, 0)).lam
    assert skewed.var().item() == pytest.approx(1 / (4 * 1.4), abs=0.01)  # Var Beta(a,a) = 1/(4(2a+1))
    none = draw_mix(MixConfig(method="mixup", prob=0.0), 5, 3, mix_generator(0, 0))
    assert torch.equal(none.lam, torch.ones(5, dtype=torch.float64))


def test_unmixed_batches_are_left_exactly_as_they_were() -> None:
    batch = _batch()
    for method in ("mixup", "cutmix"):
        out = list(
            mix_batches(
                MixConfig(method=method, prob=0.0),
                [batch],
                seed=0,
                epoch=0,
                num_batches=1,
                batch_size=3,
                device=torch.device("cpu"),
            )
        )[0]
        assert torch.equal(out.images, batch.images) and out.lam.item() == 1.0
    assert mix_batches(MixConfig(), [batch], seed=0, epoch=0, num_batches=1, batch_size=3, device="cpu") == [
        batch
    ]


def test_cutmix_box_and_area_corrected_lambda_by_hand() -> None:
    lam = torch.tensor([0.75, 0.75], dtype=torch.float64)  # cut side = 8 * sqrt(0.25) = 4
    centre = torch.tensor([[0.5, 0.25], [0.0, 0.9]], dtype=torch.float64)
    boxes, corrected = cutmix_boxes(lam, centre, 8, 8)
    # centre (4, 2): rows [2, 6), cols [0, 4); centre (0, 7): rows [0, 2), cols [5, 8) (clipped)
    assert boxes.tolist() == [[2, 6, 0, 4], [0, 2, 5, 8]]
    assert corrected.tolist() == pytest.approx([1 - 16 / 64, 1 - 6 / 64])
    draws = MixDraws(lam[:1], torch.tensor([[0.2, 0.1]]), centre[:1])
    images = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    mixed = EpochMixer(MixConfig(method="cutmix"), draws, torch.device("cpu")).mix(
        Batch(images, torch.tensor([0, 1]), torch.arange(2)), 0
    )
    expected = images.clone()
    expected[0, :, 2:6, 0:4] = 1.0  # sample 0 gets sample 1's box, and the other way round
    expected[1, :, 2:6, 0:4] = 0.0
    assert torch.equal(mixed.images, expected)
    assert mixed.partner.tolist() == [1, 0] and mixed.lam.item() == pytest.approx(0.75)


# --------------------------------------------------------------------------- EFL v1


def test_efl_v1_equals_the_spec_formula_on_a_hand_example() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 0])
    # a: p_t = 1/2, G = (1 - 1/2)/2 = 1/4 -> gamma = 2 + 8 * 3/4 = 8, weight 4
    # b: p_t = 3/4, G = (1/4)/2 = 1/8 -> gamma = 2 + 8 * 7/8 = 9, weight 4.5
    a = 4.0 * 0.5**8 * LN2
    b = 4.5 * 0.25**9 * math.log(4 / 3)
    loss = EqualizedFocalLoss(2, gamma=2.0, scale_factor=8.0, mode="v1")
    assert loss(logits, labels).item() == pytest.approx((a + b) / 2, rel=1e-5)
    repo = EqualizedFocalLoss(2, mode="repo")(logits, labels).item()  # = FL(2)
    assert repo == pytest.approx((0.5**2 * LN2 + 0.25**2 * math.log(4 / 3)) / 2, rel=1e-5)


def test_efl_v1_is_rejected_for_refl() -> None:
    with pytest.raises(ConfigError, match="loss.mode"):
        from_dict({"loss": {"name": "refl", "mode": "v1"}})
    assert from_dict({"loss": {"name": "efl", "mode": "v1"}}).loss.mode == "v1"


# --------------------------------------------------------------------------- gating order


@pytest.mark.parametrize("gate_on", ["clean", "noisy"])
def test_pos_act_gating_reads_the_clean_or_the_noisy_activation(gate_on: str, monkeypatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    constraint = ChannelConstraint(
        [ConstrainedLayer("0", model[0], mask)], weight=1.0, gating="pos_act", noise_std=1.0, gate_on=gate_on
    )
    constraint.set_training(True)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    torch.manual_seed(7)
    logits = model(x)
    terms = constraint.loss_terms(logits, y)
    hidden = F.linear(x, model[0].weight, model[0].bias).detach()  # not through the hooks
    torch.manual_seed(7)
    noisy = hidden + torch.randn(6, 4)
    gate = (hidden if gate_on == "clean" else noisy) >= 0
    assert not torch.equal(hidden >= 0, noisy >= 0)  # the two orders differ on this example
    w2 = model[2].weight.detach()
    rivals = constraint_mod.pseudo_labels(logits, y)
    g_true = w2[y] * (noisy > 0) * gate  # dz/dA through the ReLU of the noisy output, then gated
    g_rival = w2[rivals] * (noisy > 0) * gate
    expected = ((g_rival.abs() * mask[rivals]).sum() + (g_true.abs() * (1 - mask[y])).sum()) / 6
    # 24 positive float32 terms summed here and in the engine in orders of their own: at most
    # 24 * 2**-24 ~ 1.4e-6 apart relative, plus a rounding per product: 4e-6.
    assert terms["channel"].item() == pytest.approx(expected.item(), rel=4e-6)


def test_gate_on_defaults_clean_and_the_fork_preset_gates_noisy() -> None:
    assert from_dict({"doctor": {}}).doctor.gate_on == "clean"
    assert from_dict({"doctor": {"preset": "fork"}}).doctor.gate_on == "noisy"
    assert from_dict({"doctor": {"preset": "fork", "gate_on": "clean"}}).doctor.gate_on == "clean"


# --------------------------------------------------------------------------- rotation


def test_rotation_by_90_is_rot90_and_by_0_the_identity() -> None:
    x = torch.arange(2 * 2 * 5 * 5, dtype=torch.uint8).view(2, 2, 5, 5)
    out = rotate(x, torch.tensor([90.0, 0.0]))
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(1, 2)))  # counter-clockwise
    assert torch.equal(out[1], x[1])
    assert out.dtype == torch.uint8


def test_rotation_equals_torchvision_rotate_per_sample() -> None:
    tf = pytest.importorskip("torchvision.transforms.v2.functional")
    gen = torch.Generator().manual_seed(0)
    for shape in ((8, 3, 32, 32), (3, 1, 20, 32)):
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        angles = torch.rand(shape[0], generator=gen) * 30 - 15
        out = rotate(images, angles)
        for i in range(shape[0]):
            assert torch.equal(out[i], tf.rotate(images[i], float(angles[i])))


def test_rotation_draws_after_crops_and_flips_and_applies_to_masks() -> None:
    plain = draw_params(64, "crop_flip", 4, torch.Generator().manual_seed(1))
    rotated = draw_params(64, "crop_flip", 4, torch.Generator().manual_seed(1), rotation=15.0)
    assert all(torch.equal(a, b) for a, b in zip(plain.tensors()[:4], rotated.tensors()[:4], strict=True))
    assert plain.angle is None and rotated.angle.abs().max() <= 15.0 and rotated.angle.abs().max() > 10
    params = AugmentParams(
        torch.tensor([0]),
        torch.tensor([0]),
        torch.tensor([False]),
        torch.tensor([False]),
        torch.tensor([90.0]),
    )
    mask = torch.arange(9, dtype=torch.uint8).view(1, 1, 3, 3)
    assert torch.equal(crop_flip(mask, params, 0, "none"), torch.rot90(mask, 1, dims=(2, 3)))


def test_rotation_auto_is_15_only_for_balanced_cifar100() -> None:
    assert resolve_rotation("cifar100", None, 1.0, "crop_flip") == 15.0
    assert resolve_rotation("cifar100", None, 100.0, "crop_flip") == 0.0  # CIFAR-100-LT loaders
    assert resolve_rotation("cifar10", None, 1.0, "crop_flip") == 0.0
    assert resolve_rotation("cifar100", None, 1.0, "none") == 0.0
    assert resolve_rotation("digits", 30.0, 1.0, "none") == 30.0


def test_augment_params_reach_the_device_in_one_copy_per_epoch() -> None:
    params = draw_params(10, "crop_flip", 4, torch.Generator().manual_seed(0), rotation=15.0)
    device = torch.device("cpu")
    first = params.to(device)
    assert params.to(device) is first  # cached: later batches slice the device copy
    part = params.slice(2, 5, device)
    assert torch.equal(part.dy, params.dy[2:5]) and torch.equal(part.angle, params.angle[2:5])
    assert part.dy.data_ptr() == first.dy[2:5].data_ptr()  # a view, not a copy


# --------------------------------------------------------------------------- schema


def test_method_keys_validate_with_clear_messages() -> None:
    cfg = from_dict(
        {
            "epochs": 3,
            "mix": {"method": "cutmix", "alpha": 1.0, "prob": 0.5},
            "tau_norm": {"taus": [0.0, 1.0, 2.0]},
            "data": {"name": "digits", "rotation_degrees": 15},
        }
    )
    assert cfg.mix.method == "cutmix" and cfg.tau_norm.taus == (0.0, 1.0, 2.0)
    with pytest.raises(ConfigError) as err:
        from_dict({"epochs": 5, "tau_norm": {"taus": [0.0, 1.0]}, "mix": {"prob": 1.5}})
    text = str(err.value)
    assert "set epochs = 2" in text and "mix.prob" in text
    with pytest.raises(ConfigError, match="decouple.train"):
        from_dict({"decouple": {"train": "backbone"}})


def _method_cases() -> list[tuple[str, object]]:
    from engine.schema.catalog import BOUNDS
    from tests.engine.schema.test_schema_agreement import boundary_values

    keys = [k for k in BOUNDS if k.split(".")[0] in ("mix", "decouple", "tau_norm")]
    assert sorted(keys) == ["decouple.classifier_lr_factor", "mix.alpha", "mix.prob", "tau_norm.taus"]
    return [(key, value) for key in keys for value in boundary_values(BOUNDS[key], integer=False)]


def _as_config(key: str, value: object) -> dict:
    block, param = key.split(".")
    raw: dict = {block: {param: [value] if key == "tau_norm.taus" else value}}
    if block == "tau_norm":
        raw["epochs"] = 1
    return raw


@pytest.mark.parametrize(("key", "value"), _method_cases())
def test_method_ranges_validate_exactly_what_builds(key: str, value: float, tmp_path) -> None:
    """The walk of test_schema_agreement for the method blocks: a value validates iff it builds."""
    try:
        cfg = from_dict(_as_config(key, value))
    except ConfigError:
        accepted = False
    else:
        accepted = True
    builds = True
    try:
        if not math.isfinite(value):
            raise ValueError(value)
        if key.startswith("mix."):
            mix = MixConfig(method="mixup", **{key.split(".")[1]: value})
            draws = draw_mix(mix, 2, 3, mix_generator(0, 0))
            out = EpochMixer(mix, draws, torch.device("cpu")).mix(_batch(), 0)
            builds = bool(torch.isfinite(out.images).all()) and 0 <= mix.prob <= 1
        elif key.startswith("decouple."):
            model = _tiny_resnet()
            ctx = _ctx(model, tmp_path)
            Decoupled(DecoupleConfig(classifier_lr_factor=value)).setup(ctx)
            set_lr(ctx.optimizer, 0.1)
            builds = all(g["lr"] >= 0 for g in ctx.optimizer.param_groups)
        else:
            w = torch.tensor([[3.0, 4.0], [0.1, 0.2]])
            # tau < 0 inverts the normalisation; the upper end (5) is a policy bound on a sweep whose
            # reference range is [0, 2], not a build failure
            builds = 0 <= value <= 5 and bool(torch.isfinite(tau_normalised(w, value)).all())
    except ValueError:
        builds = False
    assert accepted == builds, (key, value, accepted, builds)
    if accepted:
        assert cfg is not None
