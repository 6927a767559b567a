"""The extension points of the training loop (Model Doctor and the kernel pipeline use them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.data.base import DataBundle
from engine.schema.config import EngineConfig


@dataclass
class RunContext:
    """What a plugin may use while a run is being set up and trained."""

    cfg: EngineConfig
    run_dir: Path
    artifacts_dir: Path
    cache_dir: Path
    device: torch.device
    model: nn.Module
    data: DataBundle
    optimizer: torch.optim.Optimizer
    autocast: Callable[[], AbstractContextManager[Any]]
    emit: Callable[..., None]  # emit(type, **fields)
    log: Callable[[str], None]
    make_loader: Callable[..., Iterable[Any]]  # partial(make_loader, data, placement=...)


class TrainPlugin:
    """No-op defaults; a plugin overrides what it needs."""

    name = "plugin"

    def setup(self, ctx: RunContext) -> None:
        """Runs once after model, data and optimizer exist, before the first epoch."""

    def set_training(self, training: bool) -> None:
        """Called with True before each train phase and False before evaluation."""

    def loss_terms(self, logits: torch.Tensor, batch: Any) -> dict[str, torch.Tensor]:
        """Weighted terms added to the classification loss (reported as ``loss_<key>``)."""
        return {}

    def sub_batches(self, batch: Any) -> list[Any] | None:
        """Split a batch into several optimiser steps (per-class fine-tuning); None = one step."""
        return None

    def before_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> None:
        """After backward, before ``optimizer.step()``."""

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> None:
        """After ``optimizer.step()``."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (resume)."""
