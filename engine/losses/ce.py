"""Cross-entropy with optional label smoothing (reference-spec.md §3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.losses.common import LOSSES, require_in_range
from engine.schema.config import LossConfig


class CrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        require_in_range("ce", label_smoothing=label_smoothing)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)


@LOSSES.register("ce")
def build_ce(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return CrossEntropy(cfg.label_smoothing)
