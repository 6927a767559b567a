"""Optimisers (reference-spec.md §4.2): SGD, Adam, AdamW."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.schema.config import OptimConfig
from engine.schema.validate import require_block_in_range


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """One group with weight decay on everything (the reference), or two with BN/bias undecayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay_bn_and_bias or cfg.weight_decay == 0:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    # 1-D parameters are BN affine weights and biases in every model of the registry.
    decayed = [p for p in params if p.ndim > 1]
    undecayed = [p for p in params if p.ndim <= 1]
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}]
    if undecayed:
        groups.append({"params": undecayed, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    require_block_in_range(cfg, "optim")
    groups = param_groups(model, cfg)
    # Fused kernels on CUDA: one launch per step, and a found_inf flag that skips a non-finite step on
    # the device (engine/loop.py device_guard), so the hot path never waits for the host.
    fused = any(p.is_cuda for p in model.parameters()) or None
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            fused=fused,
        )
    betas = (cfg.betas[0], cfg.betas[1])
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, fused=fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=fused)
    raise ValueError(f'unknown optimiser "{cfg.name}" (sgd, adam, adamw)')


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's lr on every group; a group with an ``lr_factor`` (engine.decoupled's classifier
    under MiSLAS's lr_factor) gets lr * factor."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)
