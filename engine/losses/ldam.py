"""LDAM with deferred re-weighting (Cao et al. 2019; reference-spec.md §10.3).

Margins Delta_j = K / n_j^(1/4) with K such that max_j Delta_j = max_m; the target logit is lowered by
its margin and all logits are scaled by s before CE. LDAM expects cosine logits: build the model with
``normed_head=True`` (see ``needs_normed_head``). DRW: class weights are 1 before ``drw_epoch`` and the
C-normalised class-balanced weights (``drw_beta``) from it on, switched by ``set_epoch(epoch)``. As in
the LDAM-DRW code, the weighted CE is normalised by the batch's summed weights (F.cross_entropy's
weighted mean), not by B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine import distributed
from engine.losses.common import LOSSES, class_balanced_weights, require_in_range
from engine.schema.config import LossConfig


def ldam_margins(counts: torch.Tensor, max_m: float) -> torch.Tensor:
    margins = counts.clamp_min(1.0).pow(-0.25)
    return margins * (max_m / margins.max())


class LDAMLoss(nn.Module):
    def __init__(
        self,
        counts: torch.Tensor,
        max_m: float = 0.5,
        s: float = 30.0,
        drw_epoch: int = 160,
        drw_beta: float = 0.9999,
    ) -> None:
        super().__init__()
        require_in_range("ldam", max_m=max_m, s=s, drw_epoch=drw_epoch, drw_beta=drw_beta)
        self.s, self.drw_epoch = s, drw_epoch
        self.register_buffer("margins", ldam_margins(counts, max_m))
        self.register_buffer("drw_weights", class_balanced_weights(counts.clamp_min(1.0), drw_beta))
        self.register_buffer("class_weights", torch.ones_like(counts))

    def set_epoch(self, epoch: int) -> None:
        """Deferred re-weighting: plain weights before drw_epoch, class-balanced from it on."""
        self.class_weights.copy_(
            self.drw_weights if epoch >= self.drw_epoch else torch.ones_like(self.class_weights)
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        adjusted = logits - onehot * self.margins[labels].unsqueeze(1)
        if self.training and distributed.world().enabled:
            return self._shared_weighted_mean(self.s * adjusted, labels)
        return F.cross_entropy(self.s * adjusted, labels, weight=self.class_weights)

    def _shared_weighted_mean(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A rank's value under data parallelism: sum_shard(w l) / W_global * N / n_shard, so that the
        loop's ``n_shard / N`` shard weighting gives sum_global(w l) / W_global, the weighted mean of
        the global batch (the ranks all-reduce the batch's summed weights and size)."""
        weighted = F.cross_entropy(logits, labels, weight=self.class_weights, reduction="none")
        local = torch.stack([self.class_weights[labels].sum(), logits.new_tensor(float(labels.numel()))])
        total_weight, total = distributed.all_reduce_sum(local.detach().double()).float()
        return weighted.sum() / total_weight * (total / max(labels.numel(), 1))


@LOSSES.register("ldam", normed_head=True)  # defined on cosine logits
def build_ldam(cfg: LossConfig, counts: torch.Tensor, num_classes: int, epochs: int) -> nn.Module:
    return LDAMLoss(counts, cfg.max_m, cfg.s, cfg.drw_epoch, cfg.drw_beta)
