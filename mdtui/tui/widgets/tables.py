"""The experiment and run tables: DataTables that update in place, keep the cursor and fit the terminal.

Every column has a fixed width and a priority; the one elastic column (the name) takes what is left.
When the terminal is too narrow for everything, the lowest-priority columns are left out instead of
cutting the important ones (a status shown as "runnin" or an ETA scrolled off screen is worse than
no model column; the run detail and config views show everything).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from mdtui.views.dashboard import ExperimentRow, RunRow

SPARK = "▁▂▃▄▅▆▇█"
SCROLLBAR = 2  # the vertical scrollbar of a full table

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


def sparkline(values: Sequence[float | None], width: int = 12) -> str:
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
    if not isinstance(value, (int, float)):
        return ""
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def fmt_secs(value: float | None) -> str:
    if value is None:
        return ""
    value = max(0, int(value))
    hours, rest = divmod(value, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours >= 100:
        return f"{hours // 24}d{hours % 24:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int  # including the one space that separates it from the next column
    priority: int = 0  # 0: always shown; higher numbers are dropped first when space runs out
    right: bool = False  # numbers align right
    comfort: int = 0  # the name column: optional columns only come in while it keeps this width
    elastic: int = 0  # ... and it grows up to this width with what is left


def fit_columns(columns: Sequence[Column], available: int) -> list[tuple[Column, int]]:
    """The columns shown at ``available`` cells and their widths (pure: tested without a terminal)."""
    shown = [c for c in columns if c.priority == 0]
    used = sum(max(c.width, c.comfort) for c in shown)
    for column in sorted((c for c in columns if c.priority), key=lambda c: c.priority):
        if used + column.width > available:
            break
        shown.append(column)
        used += column.width
    used -= sum(max(0, c.comfort - c.width) for c in shown)  # back to the minimum widths
    spare = max(0, available - used)
    out = []
    for column in columns:
        if column in shown:
            width = column.width + (min(spare, column.elastic - column.width) if column.elastic else 0)
            out.append((column, width))
    return out


def short_run_id(run_id: str) -> str:
    """``20260518-142233-ab12`` shown as ``0518-142233-ab12``: a suffix, which every verb accepts."""
    return run_id[4:] if len(run_id) == 20 and run_id[8] == "-" and run_id[:4].isdigit() else run_id


def render_cell(value: Any, width: int, right: bool) -> Text:
    """One cell exactly ``width`` wide at most: text shown as written (never read as markup), cut with …."""
    text = value.copy() if isinstance(value, Text) else Text(str(value))
    room = width - 1  # one space always separates columns
    if text.cell_len > room:
        text.truncate(max(1, room - 1))
        text.append("…")
    if right:
        text.pad_left(width - text.cell_len)
    text.no_wrap = True
    return text


class SyncTable(DataTable):
    """A DataTable fed with (key, values) rows; only changed cells are redrawn."""

    COLUMNS: tuple[Column, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, cell_padding=0, **kwargs)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []
        self._layout: list[tuple[Column, int]] = []
        self.selected: set[str] = set()

    # ------------------------------------------------------------------ layout

    def on_mount(self) -> None:
        self._relayout(self.size.width or 100)

    def on_resize(self, event: events.Resize) -> None:
        self._relayout(event.size.width)

    def _relayout(self, width: int) -> None:
        layout = fit_columns(self.COLUMNS, max(20, width - SCROLLBAR))
        if layout == self._layout:
            return
        self._layout = layout
        current = self.current_key()
        self.clear(columns=True)
        for column, col_width in layout:
            label = render_cell(Text(column.label, style="bold"), col_width, column.right)
            self.add_column(label, key=column.key, width=col_width)
        rows = [(key, self._rows[key]) for key in self._order]
        self._order = []
        self._rebuild(rows, current)

    @property
    def shown_columns(self) -> list[str]:
        return [column.key for column, _ in self._layout]

    # ------------------------------------------------------------------ selection

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
        self._set_cell(key, "sel")
        if self.cursor_row < len(self._order) - 1:
            self.move_cursor(row=self.cursor_row + 1)

    def clear_selection(self) -> None:
        marked, self.selected = self.selected, set()
        for key in marked:
            self._set_cell(key, "sel")

    def chosen(self) -> list[str]:
        """The selected rows in table order, or the row under the cursor when none is selected."""
        if self.selected:
            return [k for k in self._order if k in self.selected]
        key = self.current_key()
        return [key] if key else []

    # ------------------------------------------------------------------ data

    def _value(self, key: str, column: str) -> Any:
        if column == "sel":
            return Text("●", style="bold magenta") if key in self.selected else ""
        index = [c.key for c in self.COLUMNS].index(column) - 1
        return self._rows[key][index]

    def _cells(self, key: str) -> list[Text]:
        return [render_cell(self._value(key, c.key), w, c.right) for c, w in self._layout]

    def _set_cell(self, key: str, column: str) -> None:
        for col, width in self._layout:
            if col.key == column and key in self._rows and key in self._order:
                self.update_cell(key, column, render_cell(self._value(key, column), width, col.right))

    def _rebuild(self, rows: list[tuple[str, tuple[Any, ...]]], current: str | None) -> None:
        self.clear()
        self._rows = dict(rows)
        self._order = [key for key, _ in rows]
        if not self._layout:
            return
        for key, _ in rows:
            self.add_row(*self._cells(key), key=key)
        if current in self._rows:
            self.move_cursor(row=self._order.index(current), animate=False)

    def sync(self, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Show ``rows``; rebuild only when the set or order of keys changed, else update changed cells."""
        order = [key for key, _ in rows]
        self.selected &= set(order)
        if order != self._order:
            # the cursor follows its row, except at the top: there it stays on the newest run
            self._rebuild(rows, self.current_key() if self.cursor_row > 0 else None)
            return
        names = [c.key for c in self.COLUMNS][1:]
        shown = set(self.shown_columns)
        for key, values in rows:
            old = self._rows.get(key)
            if old == values:
                continue
            self._rows[key] = values
            for i, column in enumerate(names):
                if (old is None or old[i] != values[i]) and column in shown:
                    self._set_cell(key, column)


class ExperimentTable(SyncTable):
    # What decides the next action first (status, result), the recipe after.
    COLUMNS = (
        Column("sel", "", 2),
        Column("name", "experiment", 20, comfort=30, elastic=60),
        Column("status", "status", 10),
        Column("best", "best", 7, right=True),
        Column("curve", " acc1 curve", 14),
        Column("knobs", "knobs", 30, priority=1),
        Column("loss", "loss", 8, priority=2),
        Column("model", "model", 12, priority=3),
        Column("data", "data", 16, priority=4),
        Column("group", "group", 26, priority=5),
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


class RunTable(SyncTable):
    COLUMNS = (
        Column("sel", "", 2),
        Column("id", "run", 17),
        Column("status", "status", 11),
        Column("experiment", "experiment", 14, comfort=24, elastic=48),
        Column("epoch", "epoch", 8, right=True),
        Column("acc1", "acc1", 7, right=True),
        Column("best", "best", 7, right=True),
        Column("loss", "loss", 8, right=True, priority=1),
        Column("device", " dev", 6, priority=2),
        Column("eta", "ETA", 7, right=True, priority=3),
        Column("elapsed", "elapsed", 8, right=True, priority=4),
    )

    @staticmethod
    def cells(row: RunRow) -> tuple[Any, ...]:
        status = row.status + (f" #{row.queue_pos}" if row.queue_pos else "")
        return (
            short_run_id(row.run_id),
            Text(status, style=STATUS_STYLE.get(row.status, "")),
            row.experiment,
            row.epoch,
            fmt_pct(row.acc1),
            fmt_pct(row.best),
            fmt_loss(row.loss),
            " " + row.devices,
            fmt_secs(row.eta),
            fmt_secs(row.elapsed),
        )
