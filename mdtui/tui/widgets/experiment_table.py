"""The Experiments tab: one row per experiment (sweeps expanded), what decides the next action first."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from mdtui.tui.widgets.cells import Column, fmt_pct, sparkline, status_text
from mdtui.tui.widgets.sync_table import SyncTable
from mdtui.views.dashboard import ExperimentRow


def best_cell(row: ExperimentRow) -> Text | str:
    """The best acc1 of its completed runs; without one, the unfinished run's best in dim brackets
    (a run stopped after 1 of 5 epochs is not a result, and sorting by best leaves it out)."""
    if row.best_acc1 is not None or row.partial_best is None:
        return fmt_pct(row.best_acc1)
    return Text(f"({fmt_pct(row.partial_best)})", style="dim")


class ExperimentTable(SyncTable):
    # status and result first, the recipe after; names and knobs take the width there is
    COLUMNS = (
        Column("sel", "", 2),
        # names before knobs: two sweep points differ in their names first (200 columns cut them
        # while the knobs took 60)
        Column("name", "experiment", 14, comfort=48, elastic=1, middle=True),
        Column("status", "status", 10, fit=12),
        Column("best", "best", 7, right=True),
        Column("curve", " acc1 curve", 14),
        # cut in the middle, keeping what tells rows apart: the swept key is at the end
        Column("knobs", "knobs", 22, priority=1, comfort=60, elastic=2, middle=True),
        Column("loss", "loss", 6, priority=2, fit=14),
        Column("model", "model", 7, priority=3, fit=16),
        Column("data", "data", 8, priority=4, fit=22),
        Column("group", "group", 8, priority=5, fit=26),
    )

    @staticmethod
    def cells(row: ExperimentRow) -> tuple[Any, ...]:
        return (
            row.name,
            status_text(row.status),
            best_cell(row),
            " " + sparkline(row.curve),
            row.knobs,
            row.loss,
            row.model,
            row.data,
            row.group,
        )
