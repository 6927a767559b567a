"""The Experiments tab: one row per experiment (sweeps expanded), what decides the next action first."""

from __future__ import annotations

from typing import Any

from mdtui.tui.widgets.cells import Column, fmt_pct, sparkline, status_text
from mdtui.tui.widgets.sync_table import SyncTable
from mdtui.views.dashboard import ExperimentRow


class ExperimentTable(SyncTable):
    # status and result first, the recipe after; names and knobs take the width there is
    COLUMNS = (
        Column("sel", "", 2),
        Column("name", "experiment", 14, comfort=30, elastic=1, middle=True),
        Column("status", "status", 10, fit=12),
        Column("best", "best", 7, right=True),
        Column("curve", " acc1 curve", 14),
        Column("knobs", "knobs", 22, priority=1, comfort=60, elastic=2),
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
            fmt_pct(row.best_acc1),
            " " + sparkline(row.curve),
            row.knobs,
            row.loss,
            row.model,
            row.data,
            row.group,
        )
