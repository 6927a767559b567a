"""What goes into table cells, and which columns fit: pure functions, tested without a terminal.

Every column has a minimum width and a priority. Columns marked ``fit`` size to their content;
elastic columns (names, knobs) take what is left, up to their content. When the terminal is too
narrow, the lowest-priority columns are left out instead of cutting the important ones (a status
shown as "runnin" or an ETA scrolled off screen is worse than no model column; the run detail and
config views show everything).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from rich.text import Text

from mdtui.runs.status_style import STATUS_STYLE, status_style
from mdtui.system import formats
from mdtui.system.text import cell_width as text_cells
from mdtui.system.text import fit_widths, middle_cut_at
from mdtui.tui.text import visible

__all__ = ["STATUS_STYLE"]  # the widgets' import of the one status style (mdtui.runs.status_style)

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 12) -> str:
    """A one-line curve: the last ``width`` values scaled between their min and max."""
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1)))] for v in vals)


# A table cell: the column's header names the unit, an unknown value leaves the cell empty.
fmt_pct = partial(formats.fmt_pct, unit="", missing="")


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


def fmt_eta(value: float | None) -> str:
    """An ETA: under a second left reads "soon", not a ``0m00s`` that stays while the last epoch's
    evaluation and checkpoints are written."""
    if value is None:
        return ""
    return "soon" if value < 1 else fmt_secs(value)


def status_text(status: str) -> Text:
    return Text(status, style=status_style(status))


def short_run_id(run_id: str) -> str:
    """``20260518-142233-ab12`` shown as ``0518-142233-ab12``: a suffix, which every verb accepts."""
    return run_id[4:] if len(run_id) == 20 and run_id[8] == "-" and run_id[:4].isdigit() else run_id


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int  # the least it is given, including the one space that separates it from the next column
    priority: int = 0  # 0: always shown; higher numbers are dropped first when space runs out
    right: bool = False  # numbers align right
    fit: int = 0  # grows to its content, up to this width (status "stopping (12s)", epoch "120/200")
    comfort: int = 0  # elastic: optional columns only come in while it keeps this width
    elastic: int = 0  # elastic: takes what is left, up to its content; lower numbers are served first
    middle: bool = False  # cut in the middle (names differ at their ends), not at the end


def _wanted(column: Column, content: Mapping[str, int]) -> int:
    """The width the column's content asks for (label included), within the column's bounds."""
    text = max(content.get(column.key, 0), len(column.label)) + 1
    if column.fit:
        return max(column.width, min(text, column.fit))
    if column.elastic:
        return max(column.width, text)
    return column.width


def fit_columns(
    columns: Sequence[Column], available: int, content: Mapping[str, int] | None = None
) -> list[tuple[Column, int]]:
    """The columns shown at ``available`` cells and their widths.

    ``content``: the widest value of each column now (absent: the minimum widths are used).
    """
    content = content or {}
    # an elastic column starts at its minimum, or at its content when that is narrower (short names)
    base = {
        c.key: (min(c.width, _wanted(c, content)) if content else c.width)
        if c.elastic
        else _wanted(c, content)
        for c in columns
    }

    def reserve(column: Column) -> int:
        return max(
            base[column.key], min(column.comfort, _wanted(column, content)) if content else column.comfort
        )

    shown = [c for c in columns if c.priority == 0]
    used = sum(reserve(c) for c in shown)
    for column in sorted((c for c in columns if c.priority), key=lambda c: c.priority):
        # it comes in at its minimum; its comfort only keeps lower priorities from squeezing it
        if used + base[column.key] > available:
            break
        shown.append(column)
        used += reserve(column)
    spare = max(0, available - sum(base[c.key] for c in shown))
    widths = dict(base)
    elastic = sorted((c for c in shown if c.elastic), key=lambda c: c.elastic)
    if not content:  # nothing measured yet: the first elastic column takes what is left
        if elastic:
            widths[elastic[0].key] += spare
        return [(c, widths[c.key]) for c in columns if c in shown]
    # Every elastic column up to its comfort first (the name, then the knobs), then up to its content:
    # the CLI's allocator (mdtui.system.text.fit_widths), a lower ``elastic`` number served first.
    total = sum(widths[c.key] for c in elastic) + spare
    for full in (False, True):
        targets = [_wanted(c, content) if full else min(c.comfort, _wanted(c, content)) for c in elastic]
        floors = [widths[c.key] for c in elastic]
        natural = [max(target, floor) for target, floor in zip(targets, floors, strict=True)]
        grown = fit_widths(natural, floors, total, [-c.elastic for c in elastic]) or floors
        widths.update({c.key: w for c, w in zip(elastic, grown, strict=True)})
    return [(c, widths[c.key]) for c in columns if c in shown]


def cell_width(value: Any) -> int:
    return value.cell_len if isinstance(value, Text) else text_cells(visible(value))


def render_cell(value: Any, width: int, right: bool = False, middle: bool = False) -> Text:
    """One cell at most ``width`` wide: text shown as written (never read as markup), cut with ….

    ``middle``: the cut keeps the start and the end (sweep points and run ids differ at their ends).
    """
    text = value.copy() if isinstance(value, Text) else Text(visible(value))
    room = width - 1  # one space always separates columns
    if text.cell_len > room:
        if middle and room >= 5:
            head, tail = middle_cut_at(text.plain, room)  # the CLI's middle cut, kept styles
            start, _, end = text.divide([head, len(text) - tail])
            text = start + Text("…") + end
        else:
            text.truncate(max(1, room - 1))
            text.append("…")
    if right:
        text.pad_left(width - text.cell_len)
    text.no_wrap = True
    return text
