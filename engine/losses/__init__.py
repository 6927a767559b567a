"""Classification losses (reference-spec.md §3; formulas in reference-spec.md §10).

``build_loss(cfg, train_counts, num_classes, epochs)`` returns an nn.Module mapping (logits, labels) to
the batch-mean loss. Losses with state keep it in buffers (EFL "paper" accumulators, updated only in
``.train()`` mode) so it travels with ``state_dict``; LDAM-DRW switches its class weights through
``set_epoch(epoch)``, which the loop calls at the start of every epoch when the method exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from engine.losses import (  # noqa: F401  (registers the builders)
    ce,
    efl,
    focal,
    label_smoothing,
    ldam,
    rebalanced,
    rfl,
)
from engine.losses.common import LOSSES, LossBuildError
from engine.schema.config import LossConfig

__all__ = ["LOSSES", "LossBuildError", "build_loss", "needs_normed_head"]


def needs_normed_head(cfg: LossConfig) -> bool:
    """Whether the loss is defined on cosine logits, so the model's head must be a NormedLinear
    (``build_model(normed_head=True)``): the loss registers itself with ``normed_head=True``."""
    return bool(LOSSES.trait(cfg.name, "normed_head", False))


def build_loss(cfg: LossConfig, train_counts: Sequence[int], num_classes: int, epochs: int) -> nn.Module:
    """Build ``cfg.name`` for a training split with ``train_counts[c]`` images of class c."""
    try:
        builder = LOSSES.get(cfg.name)
    except KeyError as exc:
        raise LossBuildError(f"loss.name: {exc.args[0]}") from None
    if len(train_counts) != num_classes:
        raise LossBuildError(
            f"loss {cfg.name}: got {len(train_counts)} class counts for {num_classes} classes"
        )
    counts = torch.as_tensor(list(train_counts), dtype=torch.float32)
    return builder(cfg, counts, num_classes, epochs)
