"""Label-aware smoothing (MiSLAS, Zhong et al. CVPR 2021; reference-spec.md §10.8).

Each class y gets its own smoothing epsilon_y, from ``smooth_head`` for the most frequent training class
to ``smooth_tail`` for the rarest, along a ``shape`` in the normalised count
u_y = (n_y - n_min) / (n_max - n_min):

* concave: tail + (head - tail) * sin(pi/2 * u)
* linear:  tail + (head - tail) * u
* convex:  head + (head - tail) * sin(3pi/2 + pi/2 * u)
* exp:     tail + (head - tail) * u ** power

and the loss of a sample is (1 - epsilon_y) * (-log p_y) + epsilon_y * mean_j(-log p_j), averaged over
the batch (MiSLAS ``LabelAwareSmoothing``). With equal counts (u undefined) every class is a head class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.losses.common import LOSSES, LossBuildError, require_in_range
from engine.schema.config import LossConfig

SHAPES = ("concave", "linear", "convex", "exp")


def class_smoothing(
    counts: torch.Tensor, head: float, tail: float, shape: str = "concave", power: float = 1.0
) -> torch.Tensor:
    """epsilon_y for every class, float32 [C]."""
    if shape not in SHAPES:
        raise LossBuildError(f"loss.shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    n = counts.double()
    span = float(n.max() - n.min())
    if span == 0:
        return torch.full_like(n, head).float()
    u = (n - n.min()) / span
    if shape == "concave":
        eps = tail + (head - tail) * torch.sin(u * math.pi / 2)
    elif shape == "linear":
        eps = tail + (head - tail) * u
    elif shape == "convex":
        eps = head + (head - tail) * torch.sin(1.5 * math.pi + u * math.pi / 2)
    else:
        eps = tail + (head - tail) * u.pow(power)
    return eps.float()


class LabelAwareSmoothing(nn.Module):
    def __init__(
        self,
        counts: torch.Tensor,
        smooth_head: float = 0.3,
        smooth_tail: float = 0.0,
        shape: str = "concave",
        power: float = 1.0,
    ) -> None:
        super().__init__()
        require_in_range(
            "label_aware_smoothing", smooth_head=smooth_head, smooth_tail=smooth_tail, power=power
        )
        self.register_buffer(
            "smooth", class_smoothing(torch.as_tensor(counts), smooth_head, smooth_tail, shape, power)
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logprobs = F.log_softmax(logits.float(), dim=1)
        eps = self.smooth[labels]
        nll = -logprobs.gather(1, labels[:, None]).squeeze(1)
        uniform = -logprobs.mean(dim=1)
        return ((1.0 - eps) * nll + eps * uniform).mean()


@LOSSES.register("label_aware_smoothing")
def build_label_aware_smoothing(
    cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int
) -> nn.Module:
    return LabelAwareSmoothing(counts, cfg.smooth_head, cfg.smooth_tail, cfg.shape, cfg.power)
