"""Best-epoch selection: which epoch's test metrics a run reports as its result.

The reference selects on the test set (reference-spec.md §9.11: every reported number is a best-epoch test
accuracy); with ``data.val_fraction > 0`` the engine selects on a held-out val split instead and
reports the test metrics of that epoch, saying which was used (``selected_on``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SHOT_KEYS = ("many", "medium", "few")


@dataclass
class Selection:
    """Best-epoch bookkeeping: chosen on ``split`` (test, as the reference, or the held-out val)."""

    split: str
    compare: str  # gt | ge (reference-spec.md §4.5: ">" in OFFICIAL, ">=" in the FORK trainers)
    score: float | None = None
    epoch: int | None = None
    test: dict[str, Any] = field(default_factory=dict)  # test metrics at the selected epoch

    def offer(self, epoch: int, score: float, test: dict[str, Any]) -> bool:
        better = self.score is None or (score >= self.score if self.compare == "ge" else score > self.score)
        if better:
            self.score, self.epoch = score, epoch
            self.test = {k: test.get(k) for k in ("acc1", "acc5", "err1", *SHOT_KEYS)}
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "epoch": self.epoch, "test": dict(self.test)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score, self.epoch, self.test = state["score"], state["epoch"], dict(state["test"])
