"""Classification metrics, computed from device tensors in a few vectorised ops.

Accuracies are percentages (0-100). The many/medium/few split follows the long-tail literature
(reference-spec.md §7.3 suggests it; the reference has none): many > 100, medium 20-100, few < 20
training images per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine import distributed

MANY_MIN = 101  # > 100 training images
FEW_MAX = 19  # < 20 training images


@dataclass
class EvalAccumulator:
    """Running sums of one evaluation pass, kept on the device (no per-batch host sync)."""

    num_classes: int
    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    count: int = 0
    correct5: torch.Tensor = field(init=False)
    confusion: torch.Tensor = field(init=False)  # [true, predicted] counts

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct5 = torch.zeros((), dtype=torch.long, device=self.device)
        self.confusion = torch.zeros(self.num_classes**2, dtype=torch.long, device=self.device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        self.correct5 += (top == labels[:, None]).any(dim=1).sum()
        pred = top[:, 0]
        # index_add_, not bincount: CUDA's bincount reads the largest value back to the host (a sync
        # per batch); integer adds are exact in any order
        self.confusion.index_add_(0, labels * self.num_classes + pred, torch.ones_like(labels))
        self.loss_sum += loss_sum.double()
        self.count += int(labels.shape[0])

    def reduce(self) -> None:
        """Sum the ranks' partial passes (each rank evaluated its shard of every batch): float64
        carries every count below 2^53 exactly, so one all-reduce covers the counts and the loss."""
        if not distributed.world().enabled:
            return
        packed = torch.cat(
            [
                torch.stack([self.loss_sum, self.correct5.double()]),
                torch.tensor([float(self.count)], dtype=torch.float64, device=self.device),
                self.confusion.double(),
            ]
        )
        distributed.all_reduce_sum(packed)
        self.loss_sum = packed[0]
        self.correct5 = packed[1].round().long()
        self.count = int(packed[2].item())
        self.confusion = packed[3:].round().long()

    def result(self, train_counts: list[int] | None) -> dict:
        self.reduce()
        confusion = self.confusion.view(self.num_classes, self.num_classes).cpu()
        out = summarize(confusion, self.correct5.item(), self.loss_sum.item(), self.count, train_counts)
        out["confusion"] = confusion  # an artifact, not an event field: the caller pops it
        return out


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Recall per class in percent; None for a class without evaluation samples."""
    totals = confusion.sum(dim=1)
    correct = confusion.diagonal()
    return [
        100.0 * int(c) / int(t) if int(t) else None
        for c, t in zip(correct.tolist(), totals.tolist(), strict=True)
    ]


def shot_groups(train_counts: list[int]) -> dict[str, list[int]]:
    """Class indices per group: many (> 100 train images), medium (20-100), few (< 20)."""
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for c, n in enumerate(train_counts):
        key = "many" if n >= MANY_MIN else "few" if n <= FEW_MAX else "medium"
        groups[key].append(c)
    return groups


def shot_accuracy(per_class: list[float | None], train_counts: list[int]) -> dict[str, float | None]:
    """Mean per-class accuracy of each group (None when a group has no class)."""
    out: dict[str, float | None] = {}
    for key, classes in shot_groups(train_counts).items():
        values = [per_class[c] for c in classes if c < len(per_class) and per_class[c] is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def summarize(
    confusion: torch.Tensor, correct5: int, loss_sum: float, count: int, train_counts: list[int] | None
) -> dict:
    correct1 = int(confusion.diagonal().sum())
    acc1 = 100.0 * correct1 / count if count else 0.0
    per_class = per_class_accuracy(confusion)
    out = {
        "loss": loss_sum / count if count else float("nan"),
        "acc1": acc1,
        "acc5": 100.0 * correct5 / count if count else 0.0,
        "err1": 100.0 - acc1,
        "per_class": per_class,
        "count": count,
    }
    if train_counts is not None:
        out.update(shot_accuracy(per_class, train_counts))
    return out
