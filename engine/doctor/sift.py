"""Image sift (reference-spec.md §5.2): a streaming top-N per class, updated with tensor ops per batch.

The buffer is a [C, N] table of sort keys (larger is better). Each batch scatters its samples into a
[C, B] candidate table (a sample is a candidate only for its own class), the two tables are sorted
together along the slot axis and the first N kept. A payload (per-sample channel energies) travels
with the samples, so one pass yields both the sifted list and the statistics of the kept samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

SiftMode = Literal["high", "low"]
EnergyFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SiftResult:
    """Per class, the kept samples in order of preference (empty slots: index -1)."""

    index: torch.Tensor  # int64 [C, N] sample index into the split, -1 for an empty slot
    score: torch.Tensor  # float [C, N] p_max (high) or ±p_max (low, negative = misclassified)
    payload: torch.Tensor | None  # float [C, N, P] per-sample statistics, zero in empty slots

    @property
    def valid(self) -> torch.Tensor:
        return self.index >= 0

    @property
    def counts(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


def sift_keys(
    logits: torch.Tensor, labels: torch.Tensor, mode: SiftMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sort key, reported score) per sample; key -inf excludes a sample.

    high: only correct predictions, key = score = p_max.
    low: score s = p_max if correct else -p_max; the N smallest scores are kept, so key = -s.
    """
    probs = logits.detach().float().softmax(dim=1)
    p_max, pred = probs.max(dim=1)
    correct = pred == labels
    if mode == "high":
        key = torch.where(correct, p_max, torch.full_like(p_max, float("-inf")))
        return key, p_max
    score = torch.where(correct, p_max, -p_max)
    return -score, score


class TopPerClass:
    """Keeps the N best samples of each class over a stream of batches (ties: earlier sample wins)."""

    def __init__(self, num_classes: int, per_class: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.per_class = per_class
        self.key = torch.full((num_classes, per_class), float("-inf"), device=device)
        self.score = torch.zeros((num_classes, per_class), device=device)
        self.index = torch.full((num_classes, per_class), -1, dtype=torch.long, device=device)
        self.payload: torch.Tensor | None = None

    def update(
        self,
        key: torch.Tensor,
        score: torch.Tensor,
        labels: torch.Tensor,
        index: torch.Tensor,
        payload: torch.Tensor | None = None,
    ) -> None:
        num_classes, keep = self.num_classes, self.per_class
        batch = int(labels.shape[0])
        dev = self.key.device
        key, score, labels, index = key.to(dev), score.to(dev), labels.to(dev), index.to(dev)
        columns = torch.arange(batch, device=dev)
        candidate = torch.full((num_classes, batch), float("-inf"), device=dev)
        candidate[labels, columns] = key.float()
        all_key = torch.cat([self.key, candidate], dim=1)
        # Stable descending sort: the buffer comes first, so on ties the earlier sample stays.
        order = torch.sort(all_key, dim=1, descending=True, stable=True).indices[:, :keep]
        new_key = all_key.gather(1, order)
        filled = new_key > float("-inf")
        from_batch = order >= keep
        batch_pos = (order - keep).clamp(min=0)
        new_index = torch.where(from_batch, index[batch_pos], self.index.gather(1, order.clamp(max=keep - 1)))
        new_score = torch.where(
            from_batch, score.float()[batch_pos], self.score.gather(1, order.clamp(max=keep - 1))
        )
        if payload is not None:
            payload = payload.detach().float().to(dev)
            if self.payload is None:
                self.payload = torch.zeros((num_classes, keep, payload.shape[1]), device=dev)
            rows = torch.arange(num_classes, device=dev).unsqueeze(1) * keep
            flat = torch.where(from_batch, num_classes * keep + batch_pos, rows + order)
            pool = torch.cat([self.payload.reshape(num_classes * keep, -1), payload], dim=0)
            self.payload = pool[flat] * filled.unsqueeze(-1)
        self.key = new_key
        self.index = torch.where(filled, new_index, torch.full_like(new_index, -1))
        self.score = torch.where(filled, new_score, torch.zeros_like(new_score))

    def result(self) -> SiftResult:
        return SiftResult(
            index=self.index.cpu(),
            score=self.score.cpu(),
            payload=None if self.payload is None else self.payload.cpu(),
        )


def sift_split(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_classes: int,
    per_class: int,
    mode: SiftMode = "high",
    energy_fn: EnergyFn | None = None,
    device: torch.device | str = "cpu",
) -> SiftResult:
    """One pass over ``batches`` (objects with images/labels/index) in eval mode.

    Without ``energy_fn`` the forward pass runs under inference mode; with it, ``energy_fn(images,
    labels)`` returns (logits, per-sample payload [B, P]) and the payload is kept for the sifted samples.
    """
    was_training = model.training
    model.eval()
    top = TopPerClass(num_classes, per_class, device=device)
    try:
        for batch in batches:
            if energy_fn is None:
                with torch.inference_mode():
                    logits = model(batch.images)
                payload = None
            else:
                logits, payload = energy_fn(batch.images, batch.labels)
            key, score = sift_keys(logits, batch.labels, mode)
            top.update(key, score, batch.labels, batch.index, payload)
    finally:
        model.train(was_training)
    return top.result()
