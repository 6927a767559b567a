"""Equalized focal loss (reference-spec.md §3.3; paper form in reference-spec.md §10.7).

mode "repo" reproduces the reference's HEAD ("EFL v2"): one gradient statistic per batch,
g = clip(sum_b ReLU(G_b) / (sum_b ReLU(-G_b) + 1e-9)) with G_b = (1 - p_t,b)/B the target-column
gradient of -mean CE. It is computed analytically and treated as a constant (reference-spec.md §3.8) instead
of by a second autograd pass, so evaluation runs under no-grad. Since G_b >= 0, g = 1 and the loss
equals FL(gamma) exactly (the reference's FL vs EFL numbers differ by run-to-run noise only).

mode "v1" is the fork's form from 2022-01-26 to 02-07 (reference-spec.md §3.3, "EFL v1"): the same target
column gradient G_b = (1 - p_t,b)/B, but per sample and clipped, g_b = clip(G_b, 0, 1), so
gamma_b = gamma + s (1 - g_b) (about gamma + s, ~10 with the defaults) and the weight gamma_b / gamma
(about 5): a far stronger focusing than FL. Treated as constants like "repo".

mode "paper" is Li et al.'s class-wise form under a *softmax* formulation (the paper's is sigmoid):
per class j, g_j = clip(pos_j / (neg_j + 1e-10)) from running sums, since the start of training, of the
CE gradient magnitudes |p_j - t_j| on the logits: pos_j over samples labelled j, neg_j over the others.
Sample b is weighted (gamma_y / gamma) * (1 - p_t)^gamma_y with gamma_y = gamma + s (1 - g_y). The
gradients are computed analytically (the official code hooks the output gradient, which its docs say
breaks under fp16), accumulated only in train mode, after the batch's loss is formed (so a batch sees
the statistics of the batches before it, g = 1 at the first step: plain FL), and kept in buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine import distributed
from engine.losses.common import (
    LOSSES,
    LossBuildError,
    one_minus_target_probability,
    per_sample_ce,
    require_in_range,
    target_probability,
)
from engine.schema.config import LossConfig


def repo_batch_gamma(pt: torch.Tensor, gamma: float, scale_factor: float) -> torch.Tensor:
    """The reference's batch scalar gamma_v = gamma + s (1 - g) (reference-spec.md §3.3), detached.

    Under data parallelism a training step's statistic is over the global batch (the ranks all-reduce
    their sums); evaluation, which runs without grad, keeps each rank's own batch."""
    shared = torch.is_grad_enabled() and distributed.world().enabled
    with torch.no_grad():
        if shared:
            sums = torch.stack(
                [F.relu(1.0 - pt).sum(), F.relu(pt - 1.0).sum(), pt.new_tensor(float(pt.numel()))]
            )
            pos, neg, count = distributed.all_reduce_sum(sums.double()).float()
            ratio = (pos / count) / (neg / count + 1e-9)
            return gamma + scale_factor * (1.0 - ratio.clamp(0.0, 1.0))
        grad = (1.0 - pt) / pt.numel()  # target column of d(-mean CE)/dz
        ratio = F.relu(grad).sum() / (F.relu(-grad).sum() + 1e-9)
        return gamma + scale_factor * (1.0 - ratio.clamp(0.0, 1.0))


def v1_sample_gamma(pt: torch.Tensor, gamma: float, scale_factor: float) -> torch.Tensor:
    """EFL v1's per-sample gamma_b = gamma + s (1 - clip((1 - p_t,b)/B, 0, 1)), detached.

    B is the global batch under data parallelism in training (the reference's single-GPU batch)."""
    shared = torch.is_grad_enabled() and distributed.world().enabled  # read outside no_grad: training
    with torch.no_grad():
        count = pt.new_tensor([float(pt.numel())], dtype=torch.float64)
        if shared:
            count = distributed.all_reduce_sum(count)
        grad = (1.0 - pt) / count.float()
        return gamma + scale_factor * (1.0 - grad.clamp(0.0, 1.0))


class GradientRatioTracker(nn.Module):
    """Per-class running sums of positive/negative CE gradient magnitudes and g_j (EFL paper form)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("pos_grad", torch.zeros(num_classes))
        self.register_buffer("neg_grad", torch.zeros(num_classes))
        self.register_buffer("pos_neg", torch.ones(num_classes))  # g_j = 1 (plain FL) before any update

    def class_gamma(self, labels: torch.Tensor, gamma: float, scale_factor: float) -> torch.Tensor:
        """gamma_{y_b} = gamma + s (1 - g_{y_b}) per sample, detached."""
        return gamma + scale_factor * (1.0 - self.pos_neg[labels])

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = torch.softmax(logits.detach().float(), dim=1)
        onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
        magnitude = (probs - onehot).abs()
        # all ranks add the global batch's sums (data parallelism), so the buffers stay identical
        step = distributed.all_reduce_sum(
            torch.stack([(magnitude * onehot).sum(0), (magnitude * (1.0 - onehot)).sum(0)])
        )
        self.pos_grad += step[0]
        self.neg_grad += step[1]
        self.pos_neg.copy_((self.pos_grad / (self.neg_grad + 1e-10)).clamp(0.0, 1.0))


def check_mode(mode: str, allowed: tuple[str, ...] = ("repo", "paper")) -> None:
    if mode not in allowed:
        shown = " or ".join(f'"{m}"' for m in allowed)
        raise LossBuildError(f"loss.mode must be {shown}, got {mode!r}")


class EqualizedFocalLoss(nn.Module):
    def __init__(
        self,
        num_classes: int,
        gamma: float = 2.0,
        scale_factor: float = 8.0,
        mode: str = "repo",
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        require_in_range("efl", gamma=gamma, scale_factor=scale_factor, weight=weight)
        check_mode(mode, ("repo", "paper", "v1"))
        self.gamma, self.scale_factor, self.mode, self.weight = gamma, scale_factor, mode, weight
        self.tracker = GradientRatioTracker(num_classes) if mode == "paper" else None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = per_sample_ce(logits, labels)
        pt = target_probability(ce)
        if self.mode == "v1":
            focus = v1_sample_gamma(pt, self.gamma, self.scale_factor)
        elif self.tracker is None:
            focus = repo_batch_gamma(pt, self.gamma, self.scale_factor)
        else:
            focus = self.tracker.class_gamma(labels, self.gamma, self.scale_factor)
        loss = self.weight * ((focus / self.gamma) * one_minus_target_probability(ce).pow(focus) * ce).mean()
        if self.tracker is not None and self.training:
            self.tracker.update(logits, labels)
        return loss


@LOSSES.register("efl")
def build_efl(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return EqualizedFocalLoss(num_classes, cfg.gamma, cfg.scale_factor, cfg.mode, cfg.weight)
