"""The Runs tab: live runs first, then the queue in its order, then the rest newest first."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

from mdtui.runs.status import LIVE
from mdtui.tui.widgets.cells import STATUS_STYLE, Column, fmt_eta, fmt_loss, fmt_pct, fmt_secs, short_run_id
from mdtui.tui.widgets.sync_table import SyncTable
from mdtui.views.dashboard import RunRow


def run_status(row: RunRow, now: float) -> Text:
    """``running``, ``queued #3``, or ``stopping (12s)``: the seconds left before SIGKILL."""
    if row.stop_deadline is not None and row.status in LIVE:
        left = max(0, round(row.stop_deadline - now))
        # the seconds right-aligned in two cells: the column does not jump as they count down
        return Text(f"stopping ({left:>2}s)", style=STATUS_STYLE["stopping"])
    status = row.status + (f" #{row.queue_pos}" if row.queue_pos else "")
    return Text(status, style=STATUS_STYLE.get(row.status, ""))


class RunTable(SyncTable):
    COLUMNS = (
        Column("sel", "", 2),
        Column("id", "run", 17),
        Column("status", "status", 11, fit=16),
        Column("experiment", "experiment", 12, comfort=16, elastic=1, middle=True),
        Column("epoch", "epoch", 6, right=True, fit=10),
        Column("acc1", "acc1", 6, right=True, fit=8),
        Column("best", "best", 6, right=True, fit=8),
        Column("eta", "ETA", 7, right=True, priority=1),
        Column("device", " dev", 5, priority=2, fit=10),
        Column("loss", "train loss", 11, right=True, priority=3),
        Column("elapsed", "elapsed", 8, right=True, priority=4),
    )

    @staticmethod
    def cells(row: RunRow, now: float | None = None) -> tuple[Any, ...]:
        return (
            short_run_id(row.run_id),
            run_status(row, time.time() if now is None else now),
            row.experiment,
            row.epoch,
            fmt_pct(row.acc1),
            fmt_pct(row.best),
            fmt_eta(row.eta),
            " " + row.devices,
            fmt_loss(row.loss),
            fmt_secs(row.elapsed),
        )
