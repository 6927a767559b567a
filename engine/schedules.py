"""Learning-rate schedules as pure functions of the 0-based epoch (reference-spec.md §4.3).

The lr is set once at the start of each epoch, which is what the reference's per-epoch
``scheduler.step()`` after evaluation amounts to: epoch ``e`` trains with ``lr_at(e)``.
"""

from __future__ import annotations

import math

from engine.schema.config import EngineConfig, ScheduleConfig
from engine.schema.validate import require_block_in_range


def lr_factor(epoch: int, cfg: ScheduleConfig, epochs: int) -> float:
    """Multiplier of the base lr used during ``epoch`` (0-based)."""
    require_block_in_range(cfg, "schedule")
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "warmup_step":
        return _warmup_factor(epoch, cfg) * _milestone_factor(epoch, cfg)
    if cfg.name == "cosine":
        # CosineAnnealingLR's closed form; eta_min is absolute, so it is applied in lr_at.
        t_max = cfg.t_max or epochs
        return (1.0 + math.cos(math.pi * min(epoch, t_max) / t_max)) / 2.0
    if cfg.name == "step":
        return cfg.gamma ** (epoch // cfg.step_size)
    if cfg.name == "linear_ramp":
        # The LR-range test of modify_kernel/find_lr.py: factor e/E, so epoch 0 trains with lr 0.
        ramp = cfg.ramp_epochs or epochs
        return min(epoch / ramp, 1.0)
    raise ValueError(f'unknown schedule "{cfg.name}"')


def _warmup_factor(epoch: int, cfg: ScheduleConfig) -> float:
    warm = cfg.warmup_epochs
    if warm <= 0 or epoch >= warm:
        return 1.0
    if cfg.warmup == "repo_e_over_4":
        # The reference from 2022-02-10 to 03-11: e/(W-1), so epoch 0 has lr 0 (reference-spec.md §4.3).
        return epoch / max(warm - 1, 1)
    return (epoch + 1) / warm


def _milestone_factor(epoch: int, cfg: ScheduleConfig) -> float:
    # Each milestone reached multiplies by `factor` again: 0.01 at 160, 1e-4 at 180 (reference-spec.md §4.3).
    passed = sum(1 for m in cfg.milestones if epoch >= m)
    return cfg.factor**passed


def lr_at(epoch: int, cfg: EngineConfig, epochs: int | None = None) -> float:
    """The absolute learning rate of ``epoch`` for a run configured by ``cfg``."""
    total = epochs if epochs is not None else cfg.epochs
    require_block_in_range(cfg.optim, "optim")
    factor = lr_factor(epoch, cfg.schedule, total)
    if cfg.schedule.name == "cosine":
        eta_min = cfg.schedule.eta_min
        return eta_min + (cfg.optim.lr - eta_min) * factor
    return cfg.optim.lr * factor
