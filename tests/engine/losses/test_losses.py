"""Every loss against numbers computed by hand from its formula (reference-spec.md §3; reference-spec.md §10)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.losses import LOSSES, LossBuildError, build_loss, needs_normed_head
from engine.losses.efl import repo_batch_gamma
from engine.losses.ldam import ldam_margins
from engine.schema.config import LOSS_NAMES, LossConfig

LN2, LN4, LN125 = math.log(2), math.log(4), math.log(1.25)


def from_probs(*rows: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly each row (rows need not be normalised)."""
    return torch.tensor(rows, dtype=torch.float64).log().float()


# Three samples of class 0 with p_t = 0.5, 0.25 and 0.8: CE = ln 2, ln 4, ln 1.25.
LOGITS = from_probs([2, 1, 1], [1, 1, 2], [8, 1, 1])
LABELS = torch.tensor([0, 0, 0])
COUNTS = [4, 2, 2]


def loss_of(name: str, counts: list[int] = COUNTS, **params) -> torch.nn.Module:
    return build_loss(LossConfig(name=name, **params), counts, len(counts), epochs=10)


def value(name: str, logits=LOGITS, labels=LABELS, counts: list[int] = COUNTS, **params) -> float:
    return loss_of(name, counts, **params)(logits, labels).item()


def one_sample_at(pt: float) -> torch.Tensor:
    """Logits of one class-0 sample with target probability pt (3 classes)."""
    return from_probs([pt, (1 - pt) / 2, (1 - pt) / 2])


def test_registry_names_equal_config_catalogue() -> None:
    assert sorted(LOSSES.names()) == sorted(LOSS_NAMES)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_forward_backward_is_finite(name: str) -> None:
    torch.manual_seed(0)
    loss_fn = (
        loss_of(name, [50, 10, 3, 1], mode="paper")
        if name in ("efl", "refl")
        else loss_of(name, [50, 10, 3, 1])
    )
    logits = (torch.randn(6, 4) * 5).requires_grad_()
    loss = loss_fn(logits.bfloat16(), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_ce_and_label_smoothing() -> None:
    assert value("ce") == pytest.approx((LN2 + LN4 + LN125) / 3, rel=1e-6)
    smoothed = 0.9 * LN2 + 0.1 * (LN2 + LN4 + LN4) / 3  # (1 - eps) CE + eps * mean_j(-log p_j)
    assert value("ce", LOGITS[:1], LABELS[:1], label_smoothing=0.1) == pytest.approx(smoothed, rel=1e-6)


def test_focal_loss_and_constant_weight() -> None:
    expected = (0.5**2 * LN2 + 0.75**2 * LN4 + 0.2**2 * LN125) / 3
    assert value("fl") == pytest.approx(expected, rel=1e-6)
    assert value("fl", weight=0.25) == pytest.approx(0.25 * expected, rel=1e-6)
    assert value("fl", gamma=0.0) == pytest.approx(value("ce"), rel=1e-6)


def test_dual_focal_loss_as_implemented() -> None:
    assert value("dfl") == pytest.approx((LN2 + 0.5 + LN4 + 0.75 + LN125 + 0.2) / 3, rel=1e-6)


def test_efl_repo_mode_equals_focal_loss_exactly() -> None:
    torch.manual_seed(1)
    logits, labels = torch.randn(16, 5) * 3, torch.randint(0, 5, (16,))
    counts = [9, 7, 5, 3, 1]
    for gamma, weight in [(2.0, 1.0), (1.0, 0.25)]:
        efl = loss_of("efl", counts, gamma=gamma, weight=weight)(logits, labels)
        fl = loss_of("fl", counts, gamma=gamma, weight=weight)(logits, labels)
        assert torch.equal(efl, fl)
    # the degenerate statistic: g = 1 unless every p_t == 1, then gamma_v = 2 + 8 (reference-spec.md §3.3)
    assert repo_batch_gamma(torch.tensor([0.5, 0.9]), 2.0, 8.0).item() == 2.0
    assert repo_batch_gamma(torch.tensor([1.0, 1.0]), 2.0, 8.0).item() == 10.0


def test_efl_paper_mode_accumulates_per_class_ratio_in_train_mode_only() -> None:
    efl = loss_of("efl", mode="paper")
    # first batch: g_j = 1 for all j, so EFL == FL
    batch, labels = from_probs([2, 1, 1], [3, 1, 1]), torch.tensor([0, 1])
    first = efl(batch, labels).item()
    assert first == pytest.approx((0.5**2 * LN2 + 0.8**2 * math.log(5)) / 2, rel=1e-6)
    # |p - t| sums: class 0 pos 0.5 neg 0.6 -> g 5/6; class 1 pos 0.8 neg 0.25 -> 1; class 2 pos 0 -> 0
    assert efl.tracker.pos_neg.tolist() == pytest.approx([5 / 6, 1.0, 0.0], rel=1e-6)
    gamma0, gamma2 = 2 + 8 * (1 - 5 / 6), 10.0
    probe = from_probs([2, 1, 1], [1, 1, 2])  # class 0 and class 2 samples, both p_t = 0.5
    expected = ((gamma0 / 2) * 0.5**gamma0 * LN2 + (gamma2 / 2) * 0.5**gamma2 * LN2) / 2
    efl.eval()
    assert efl(probe, torch.tensor([0, 2])).item() == pytest.approx(expected, rel=1e-5)
    assert efl.tracker.pos_neg.tolist() == pytest.approx([5 / 6, 1.0, 0.0], rel=1e-6)  # eval: no update
    assert set(efl.state_dict()) == {"tracker.pos_grad", "tracker.neg_grad", "tracker.pos_neg"}


def test_reduced_focal_loss_formula() -> None:
    # th 0.5: p_t 0.5 -> (0.5/0.5)^2 = 1, p_t 0.25 < th -> 1, p_t 0.8 -> 0.2^2/0.5^2 = 0.16
    assert value("rfl") == pytest.approx((LN2 + LN4 + 0.16 * LN125) / 3, rel=1e-6)


@pytest.mark.parametrize(
    ("threshold", "below", "above"),
    [(0.5, 1.0, 1.0), (0.4, 1.0, 2.25), (0.25, 1.0, 9.0), (0.1, 1.0, 81.0), (0.6, 1.0, 4 / 9)],
)
@pytest.mark.parametrize("name", ["rfl", "refl"])
def test_reduced_weight_jumps_at_the_threshold(
    name: str, threshold: float, below: float, above: float
) -> None:
    eps = 1e-4
    for pt, weight in [(threshold - eps, below), (threshold + eps, above)]:
        logits = one_sample_at(pt)
        ce = F.cross_entropy(logits, LABELS[:1]).item()
        assert value(name, logits, LABELS[:1], threshold=threshold) / ce == pytest.approx(weight, rel=2e-3)


def test_refl_versions() -> None:
    rfl = value("rfl")
    assert value("refl") == rfl  # v1, repo mode: w_f == 1, REFL == RFL (reference-spec.md §3.5)
    assert value("refl", version="v2") == pytest.approx((0.25 * LN2 + LN4 + 0.04 * LN125) / 3, rel=1e-6)
    assert value("refl", version="v3") == pytest.approx(rfl + (0.5 + 0.75 + 0.2) / 3, rel=1e-6)
    assert value("refl", version="v4") == pytest.approx(rfl + (0.25 + 0.5625 + 0.04) / 3, rel=1e-6)
    assert value("refl", mode="paper") == pytest.approx(rfl, rel=1e-6)  # no statistics yet: g = 1


def test_class_balanced_weights_and_loss() -> None:
    counts, beta = [100, 10, 1], 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    weights = [3 * w / sum(raw) for w in raw]
    cb = loss_of("cb", counts, beta=beta)
    assert cb.class_weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert cb.class_weights.tolist() == pytest.approx(weights, rel=1e-5)
    logits, labels = from_probs([2, 1, 1], [1, 1, 2]), torch.tensor([0, 2])
    assert cb(logits, labels).item() == pytest.approx((weights[0] * LN2 + weights[2] * LN2) / 2, rel=1e-5)
    focal = loss_of("cb", counts, beta=beta, base="focal", gamma=1.0)(logits, labels).item()
    assert focal == pytest.approx((weights[0] * 0.5 * LN2 + weights[2] * 0.5 * LN2) / 2, rel=1e-5)


def test_balanced_softmax_and_logit_adjustment() -> None:
    # counts [2, 1, 1]: z + log n turns probabilities [2, 1, 1] into [4, 1, 1] -> p_t = 2/3
    one, label = LOGITS[:1], LABELS[:1]
    assert value("balanced_softmax", one, label, counts=[2, 1, 1]) == pytest.approx(math.log(1.5), rel=1e-6)
    # tau = 2: z + 2 log pi, pi = [.5, .25, .25] -> [0.5, 0.0625, 0.0625] -> p_t = 0.8
    assert value("logit_adjusted", one, label, counts=[2, 1, 1], tau=2.0) == pytest.approx(LN125, rel=1e-5)
    assert value("logit_adjusted", tau=0.0) == pytest.approx(value("ce"), rel=1e-6)
    torch.manual_seed(2)
    logits, labels = torch.randn(8, 4), torch.randint(0, 4, (8,))
    counts = [40, 12, 5, 1]  # log n and log pi differ by a constant, which softmax ignores
    balanced = loss_of("balanced_softmax", counts)(logits, labels)
    adjusted = loss_of("logit_adjusted", counts, tau=1.0)(logits, labels)
    assert balanced.item() == pytest.approx(adjusted.item(), rel=1e-5)


def test_ldam_margins_and_deferred_reweighting() -> None:
    margins = ldam_margins(torch.tensor([16.0, 1.0]), 0.5)  # 1/n^(1/4) = 0.5, 1 -> scaled to max 0.5
    assert margins.tolist() == pytest.approx([0.25, 0.5])
    assert ldam_margins(torch.tensor([5000.0, 500.0, 50.0]), 0.3).max().item() == pytest.approx(0.3)
    ldam = loss_of("ldam", [16, 1], s=30.0, max_m=0.5, drw_epoch=3, drw_beta=0.9)
    assert needs_normed_head(LossConfig(name="ldam")) and not needs_normed_head(LossConfig(name="ce"))
    logits, labels = torch.tensor([[0.2, 0.1], [0.2, 0.1]]), torch.tensor([0, 1])
    # s * (z - margin on the target): [-1.5, 3] for class 0, [6, -12] for class 1
    ce0, ce1 = math.log1p(math.exp(4.5)), math.log1p(math.exp(18.0))
    ldam.set_epoch(2)
    assert ldam(logits, labels).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    ldam.set_epoch(3)
    raw = [(1 - 0.9) / (1 - 0.9**16), 1.0]
    w0, w1 = (2 * w / sum(raw) for w in raw)
    assert ldam.class_weights.tolist() == pytest.approx([w0, w1], rel=1e-5)
    assert ldam(logits, labels).item() == pytest.approx((w0 * ce0 + w1 * ce1) / (w0 + w1), rel=1e-5)
    ldam.set_epoch(0)
    assert ldam.class_weights.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rfl", {"threshold": 0.0}, "loss.threshold"),
        ("fl", {"gamma": -1.0}, "loss.gamma"),
        ("efl", {"gamma": 0.0}, "loss.gamma"),
        ("cb", {"beta": 1.0}, "loss.beta"),
        ("ce", {"label_smoothing": 1.0}, "loss.label_smoothing"),
        ("ldam", {"max_m": 0.0}, "loss.max_m"),
    ],
)
def test_bad_parameters_are_clear_errors(name: str, params: dict, message: str) -> None:
    with pytest.raises(LossBuildError, match=message):
        loss_of(name, **params)


def test_unknown_name_and_count_mismatch() -> None:
    with pytest.raises(LossBuildError, match='unknown loss "focal".*valid:'):
        build_loss(LossConfig(name="focal"), COUNTS, 3, 10)
    with pytest.raises(LossBuildError, match="2 class counts for 3 classes"):
        build_loss(LossConfig(), [1, 2], 3, 10)
