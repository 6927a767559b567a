"""Focal loss (reference-spec.md §3.2) and the reference's "dual focal loss" (reference-spec.md §3.6)."""

from __future__ import annotations

import torch
from torch import nn

from engine.losses.common import (
    LOSSES,
    one_minus_target_probability,
    per_sample_ce,
    require_in_range,
)
from engine.schema.config import LossConfig


class FocalLoss(nn.Module):
    """weight * mean_b (1 - p_t)^gamma * CE_b; `weight` is a constant scale, not a per-class alpha."""

    def __init__(self, gamma: float = 2.0, weight: float = 1.0) -> None:
        super().__init__()
        require_in_range("fl", gamma=gamma, weight=weight)
        self.gamma = gamma
        self.weight = weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = per_sample_ce(logits, labels)
        modulator = one_minus_target_probability(ce).pow(self.gamma)
        return self.weight * (modulator * ce).mean()


class DualFocalLoss(nn.Module):
    """mean_b (CE_b + (1 - p_t)): what the reference implements under the DFL name (reference-spec.md §3.6);
    the cited paper's adaptive class weights are not part of it."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = per_sample_ce(logits, labels)
        return (ce + one_minus_target_probability(ce)).mean()


@LOSSES.register("fl")
def build_fl(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return FocalLoss(cfg.gamma, cfg.weight)


@LOSSES.register("dfl")
def build_dfl(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return DualFocalLoss()
