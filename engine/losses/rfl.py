"""Reduced focal loss (reference-spec.md §3.4) and the lab's REFL combination (reference-spec.md §3.5).

RFL: w_b = 1 where p_t < th, else (1 - p_t)^gamma / th^gamma; loss = mean_b w_b CE_b. At the switch
point the weight jumps from 1 to ((1 - th)/th)^gamma: continuous only for th = 0.5 (th = 0.4: 2.25,
th = 0.25: 9, th = 0.1: 81 -- moderately confident samples are *up*-weighted below 0.5).

REFL: mean_b w_f w_b CE_b with w_f the EFL weighting factor (efl.py). mode "repo": the reference's
batch scalar, identically 1, so REFL(th) == RFL(th) as in every reported REFL result. mode "paper":
w_f = gamma_y / gamma from the per-class gradient ratio of the EFL paper form; w_b keeps the plain
gamma. Versions (reference-spec.md §3.5; v1 is the reference's HEAD):
  v1: w_b as RFL;  v2: w_b = (1 - p_t)^gamma above th (no division by th^gamma);
  v3: v1 + (1 - p_t) per sample;  v4: v1 + (1 - p_t)^gamma per sample.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.losses.common import (
    LOSSES,
    LossBuildError,
    one_minus_target_probability,
    per_sample_ce,
    require_in_range,
    target_probability,
)
from engine.losses.efl import GradientRatioTracker, check_mode, repo_batch_gamma
from engine.schema.config import LossConfig


def reduced_weight(pt: torch.Tensor, threshold: float, gamma: float, *, divide: bool = True) -> torch.Tensor:
    """w = 1 where p_t < th, else (1 - p_t)^gamma (/ th^gamma when `divide`)."""
    easy = (1.0 - pt).clamp_min(0.0).pow(gamma)
    if divide:
        easy = easy / threshold**gamma
    return torch.where(pt < threshold, torch.ones_like(pt), easy)


class ReducedFocalLoss(nn.Module):
    def __init__(self, threshold: float = 0.5, gamma: float = 2.0) -> None:
        super().__init__()
        require_in_range("rfl", threshold=threshold, gamma=gamma)
        self.threshold, self.gamma = threshold, gamma

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = per_sample_ce(logits, labels)
        return (reduced_weight(target_probability(ce), self.threshold, self.gamma) * ce).mean()


class ReducedEqualizedFocalLoss(nn.Module):
    def __init__(
        self,
        num_classes: int,
        threshold: float = 0.5,
        gamma: float = 2.0,
        scale_factor: float = 8.0,
        version: str = "v1",
        mode: str = "repo",
    ) -> None:
        super().__init__()
        require_in_range("refl", threshold=threshold, gamma=gamma, scale_factor=scale_factor)
        check_mode(mode)
        if version not in ("v1", "v2", "v3", "v4"):
            raise LossBuildError(f'loss.version must be one of "v1", "v2", "v3", "v4", got {version!r}')
        self.threshold, self.gamma, self.scale_factor = threshold, gamma, scale_factor
        self.version, self.mode = version, mode
        self.tracker = GradientRatioTracker(num_classes) if mode == "paper" else None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = per_sample_ce(logits, labels)
        pt = target_probability(ce)
        if self.tracker is None:
            factor = repo_batch_gamma(pt, self.gamma, self.scale_factor) / self.gamma
        else:
            factor = self.tracker.class_gamma(labels, self.gamma, self.scale_factor) / self.gamma
        weight = reduced_weight(pt, self.threshold, self.gamma, divide=self.version != "v2")
        per_sample = factor * weight * ce
        if self.version == "v3":
            per_sample = per_sample + one_minus_target_probability(ce)
        elif self.version == "v4":
            per_sample = per_sample + one_minus_target_probability(ce).pow(self.gamma)
        if self.tracker is not None and self.training:
            self.tracker.update(logits, labels)
        return per_sample.mean()


@LOSSES.register("rfl")
def build_rfl(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return ReducedFocalLoss(cfg.threshold, cfg.gamma)


@LOSSES.register("refl")
def build_refl(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return ReducedEqualizedFocalLoss(
        num_classes, cfg.threshold, cfg.gamma, cfg.scale_factor, cfg.version, cfg.mode
    )
