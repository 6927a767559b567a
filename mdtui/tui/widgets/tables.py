"""The experiment and run tables: DataTables that update in place and keep the cursor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from mdtui.dashboard import ExperimentRow, RunRow

SPARK = "▁▂▃▄▅▆▇█"

STATUS_STYLE = {
    "running": "bold green",
    "starting": "green",
    "completed": "cyan",
    "queued": "yellow",
    "created": "yellow",
    "blocked": "bold black on yellow",
    "failed": "bold white on red",
    "lost": "bold white on magenta",
    "stopped": "dim",
    "cancelled": "dim",
}


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """A one-line curve: the last ``width`` values scaled between their min and max."""
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1)))] for v in vals)


def fmt_pct(value: float | None) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def fmt_loss(value: float | None) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def fmt_secs(value: float | None) -> str:
    if value is None:
        return ""
    value = int(value)
    hours, rest = divmod(value, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def plain(value: object) -> Text:
    """A cell shown exactly as written (DataTable reads bare strings as markup: "[x=1]" vanishes)."""
    return Text(str(value), no_wrap=True, overflow="ellipsis")


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


class SyncTable(DataTable):
    """A DataTable fed with (key, cells) rows; only changed cells are redrawn."""

    COLUMNS: tuple[tuple[str, str], ...] = ()
    WIDTHS: dict[str, int] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []
        self.selected: set[str] = set()

    def on_mount(self) -> None:
        for key, label in self.COLUMNS:
            self.add_column(label, key=key, width=self.WIDTHS.get(key))

    def current_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def keys(self) -> list[str]:
        return list(self._order)

    def toggle_selected(self) -> None:
        key = self.current_key()
        if key is None:
            return
        self.selected ^= {key}
        self._set_mark(key)
        if self.cursor_row < len(self._order) - 1:
            self.move_cursor(row=self.cursor_row + 1)

    def chosen(self) -> list[str]:
        """The selected rows in table order, or the row under the cursor when none is selected."""
        if self.selected:
            return [k for k in self._order if k in self.selected]
        key = self.current_key()
        return [key] if key else []

    def _mark(self, key: str) -> Text:
        return Text("●", style="bold magenta") if key in self.selected else Text(" ")

    def _set_mark(self, key: str) -> None:
        if key in self._rows:
            self.update_cell(key, "sel", self._mark(key))

    def sync(self, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Show ``rows``; rebuild only when the set or order of keys changed."""
        order = [key for key, _ in rows]
        self.selected &= set(order)
        if order != self._order:
            current = self.current_key()
            self.clear()
            for key, cells in rows:
                self.add_row(self._mark(key), *cells, key=key)
            self._order = order
            self._rows = dict(rows)
            if current in order:
                self.move_cursor(row=order.index(current), animate=False)
            return
        columns = [key for key, _ in self.COLUMNS][1:]
        for key, cells in rows:
            old = self._rows.get(key)
            if old == cells:
                continue
            for i, (col, cell) in enumerate(zip(columns, cells)):
                if old is None or old[i] != cell:
                    self.update_cell(key, col, cell)
            self._rows[key] = cells


class ExperimentTable(SyncTable):
    # What decides the next action first (status, result), the recipe after: fits 80 columns.
    COLUMNS = (
        ("sel", " "),
        ("name", "experiment"),
        ("status", "status"),
        ("best", "best"),
        ("curve", "acc1 curve"),
        ("loss", "loss"),
        ("knobs", "knobs"),
        ("model", "model"),
        ("data", "data"),
        ("group", "group"),
    )
    WIDTHS = {"name": 34, "group": 24, "knobs": 26, "data": 14, "curve": 12}

    @staticmethod
    def cells(row: ExperimentRow) -> tuple[Any, ...]:
        return (
            plain(row.name),
            status_text(row.status),
            fmt_pct(row.best_acc1),
            sparkline(row.curve),
            plain(row.loss),
            plain(row.knobs),
            plain(row.model),
            plain(row.data),
            plain(row.group),
        )


class RunTable(SyncTable):
    COLUMNS = (
        ("sel", " "),
        ("id", "run"),
        ("experiment", "experiment"),
        ("status", "status"),
        ("device", "dev"),
        ("epoch", "epoch"),
        ("loss", "loss"),
        ("acc1", "acc1"),
        ("best", "best"),
        ("elapsed", "elapsed"),
        ("eta", "ETA"),
    )

    @staticmethod
    def cells(row: RunRow) -> tuple[Any, ...]:
        status = row.status + (f" #{row.queue_pos}" if row.queue_pos else "")
        return (
            plain(row.run_id),
            plain(row.experiment),
            Text(status, style=STATUS_STYLE.get(row.status, "")),
            plain(row.devices),
            plain(row.epoch),
            fmt_loss(row.loss),
            fmt_pct(row.acc1),
            fmt_pct(row.best),
            fmt_secs(row.elapsed),
            fmt_secs(row.eta),
        )
