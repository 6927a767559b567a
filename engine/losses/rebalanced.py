"""Class-count-aware losses: class-balanced (Cui et al. 2019), balanced softmax (Ren et al. 2020) and
the logit-adjusted loss (Menon et al. 2021); formulas in reference-spec.md §10.2-§10.5.

Classes absent from the training split are counted as 1 image, so log n and 1/E_n stay finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.losses.common import (
    LOSSES,
    LossBuildError,
    class_balanced_weights,
    one_minus_target_probability,
    per_sample_ce,
    require_in_range,
)
from engine.schema.config import LossConfig


class ClassBalancedLoss(nn.Module):
    """mean_b w_{y_b} L_b with w = C-normalised 1/E_n, L = softmax CE or softmax focal (gamma).

    Cui et al.'s focal variant is sigmoid-based; here "focal" is the softmax focal loss of spec
    section 3.2, so every loss of this engine shares the softmax classifier.
    """

    def __init__(self, counts: torch.Tensor, beta: float = 0.9999, base: str = "softmax", gamma: float = 2.0):
        super().__init__()
        if base not in ("softmax", "focal"):
            raise LossBuildError(f'loss.base must be "softmax" or "focal", got {base!r}')
        require_in_range("cb", beta=beta, gamma=gamma)
        self.base, self.gamma = base, gamma
        self.register_buffer("class_weights", class_balanced_weights(counts.clamp_min(1.0), beta))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = per_sample_ce(logits, labels)
        if self.base == "focal":
            ce = one_minus_target_probability(ce).pow(self.gamma) * ce
        return (self.class_weights[labels] * ce).mean()


class LogitAdjustedLoss(nn.Module):
    """CE(z + tau * log prior, y). Balanced softmax is tau = 1 with log n, which differs from log pi
    by the constant log N per row and so gives the same loss."""

    def __init__(self, counts: torch.Tensor, tau: float = 1.0, *, use_counts: bool = False) -> None:
        super().__init__()
        require_in_range("logit_adjusted", tau=tau)
        counts = counts.clamp_min(1.0)
        prior = counts if use_counts else counts / counts.sum()
        self.register_buffer("adjustment", tau * prior.log())

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.adjustment, labels)


@LOSSES.register("cb")
def build_cb(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return ClassBalancedLoss(counts, cfg.beta, cfg.base, cfg.gamma)


@LOSSES.register("balanced_softmax")
def build_balanced_softmax(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return LogitAdjustedLoss(counts, 1.0, use_counts=True)


@LOSSES.register("logit_adjusted")
def build_logit_adjusted(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return LogitAdjustedLoss(counts, cfg.tau)
