"""The long-tail kernel pipeline (reference-spec.md §6): pattern sift, kernel dictionaries, masked fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.plugins import TrainPlugin
    from engine.schema.config import EngineConfig


def build_kernels(cfg: EngineConfig) -> TrainPlugin | None:
    """The kernel-masked fine-tuning plugin for a run with a ``kernels`` block, else None."""
    if cfg.kernels is None:
        return None
    from engine.kernels.finetune import KernelFinetunePlugin

    return KernelFinetunePlugin(cfg)
