"""Shared pieces of the losses: the registry and per-sample helpers.

Every loss maps (logits [B, C], labels [B]) to the batch-mean loss (reference-spec.md §3) and computes in
float32 whatever the autocast precision, because (1 - p_t)^gamma and log-sums lose too much in bf16.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.registry import Registry
from engine.schema.catalog import bound_problem
from engine.schema.config import LossConfig

# A builder takes (cfg, train class counts as a float tensor [C], num_classes, epochs).
LossBuilder = Callable[[LossConfig, torch.Tensor, int, int], nn.Module]
LOSSES: Registry[LossBuilder] = Registry("loss")


class LossBuildError(ValueError):
    """A loss configuration that cannot be built (bad parameter value or class counts)."""


def require_in_range(loss: str, **params: float) -> None:
    """Raise LossBuildError for the first parameter outside its range in the schema's catalogue.

    ``mdtui validate`` checks the same catalogue, so a validated config never fails here; the losses
    keep no ranges of their own (a loss built directly, in tests or plugins, gets the same message).
    """
    for param, value in params.items():
        problem = bound_problem(f"loss.{param}", value, loss)
        if problem:
            raise LossBuildError(f"loss.{param} {problem}")


def per_sample_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE_b = -log p_{t,b}, shape [B], in float32."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def target_probability(ce: torch.Tensor) -> torch.Tensor:
    """p_t = exp(-CE) from the *unweighted* per-sample CE (reference-spec.md §10.1 gotcha)."""
    return torch.exp(-ce)


def one_minus_target_probability(ce: torch.Tensor) -> torch.Tensor:
    """1 - p_t, exact near p_t = 1 (expm1) and kept above 0 so (1 - p_t)^gamma has a finite gradient
    for gamma < 1 on samples the model already classifies with p_t == 1.0 in float32."""
    return (-torch.expm1(-ce)).clamp_min(1e-12)


def class_balanced_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al. weights w_j = (1 - beta) / (1 - beta^n_j), normalised to sum to C."""
    assert 0.0 <= beta < 1.0, beta  # checked by the callers against the catalogue
    effective_number = 1.0 - torch.pow(torch.as_tensor(beta, dtype=torch.float64), counts.double())
    weights = (1.0 - beta) / effective_number.clamp_min(1e-12)
    return (weights * len(counts) / weights.sum()).float()
