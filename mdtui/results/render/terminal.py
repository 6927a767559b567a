"""Report tables for a terminal: a Rich table per group that fits the width it is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from mdtui.results.render.cells import (
    agg_words,
    delta_text,
    has_notes,
    n_header,
    paper_text,
    stat_text,
    table_caption,
    value_text,
)
from mdtui.results.tables import GroupTable, PivotTable, Row, Stat
from mdtui.system.terminal import Cell, Column, Layout, fit_table, rich_table

# When no shape fits, columns go in this order (highest first) until the table fits: the note, err1
# (it is 100 - acc1), acc5, the knobs (the experiment's name carries its sweep point), then n, the
# long-tail splits and Δ. The experiment and the headline metric always stay.
_DROP_NOTE, _DROP_KNOB, _DROP_N, _DROP_DELTA = 9, 6, 3, 1


_TERMINAL_DROP = {"err1": 8, "acc5": 7, "many": 2, "medium": 2, "few": 2}


@dataclass(frozen=True)
class _Shape:
    """How compact a terminal table is drawn: knob headers, and stats on one line or two."""

    knob_headers: str  # "full" | "short" (last unique dotted part) | "index" (k1, k2, ...)
    fold_stats: bool


# Tried in order until one fits without dropping a column.
_SHAPES = (
    _Shape("full", False),
    _Shape("short", False),
    _Shape("short", True),
    _Shape("index", True),
)


def short_keys(keys: list[str]) -> list[str]:
    """The shortest dotted suffix of each key that no other key ends with (``lr`` for ``optim.lr``)."""
    out = []
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(o != key and (o == tail or o.endswith("." + tail)) for o in keys):
                break
        out.append(tail)
    return out


def _knob_headers(keys: list[str], how: str) -> list[str]:
    if how == "full":
        return list(keys)
    if how == "short":
        return short_keys(keys)
    return [f"k{i}" for i in range(1, len(keys) + 1)]


def _term_stat(stat: Stat | None, best: bool, fold: bool) -> Cell:
    if stat is None:
        return ""
    text = stat_text(stat, pm="\n±" if fold else " ± ")
    return Text(text, style="bold" if best else "")


def _term_metric(row: Row, metric: str, fold: bool) -> Cell:
    cell = _term_stat(row.stats[metric], metric in row.best, fold)
    paper = paper_text(row, metric)
    if not paper or not isinstance(cell, Text):
        return cell
    # On its own line: the figure beside would widen every metric column that has one.
    return cell + Text("\n" + paper.strip(" ()"), style="dim")


def _term_delta(row: Row, fold: bool) -> str:
    text = delta_text(row).replace(" (", "\n").rstrip(")")  # the verdict under the number, as a paper figure
    # Folded: the interval goes under the Δ too, as ± std goes under a mean.
    return text.replace(" ± ", "\n± ") if fold else text


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _term_group(table: GroupTable, agg: str, shape: _Shape) -> tuple[list[Column], list[list[Cell]]]:
    columns = [Column("experiment", cut="middle", min_width=16, grow=1)]
    for key, header in zip(table.knob_keys, _knob_headers(table.knob_keys, shape.knob_headers), strict=True):
        numeric = all(_is_number(row.values.get(key)) for row in table.rows)
        columns.append(Column(header, cut="none" if numeric else "end", min_width=6, drop=_DROP_KNOB))
    columns += [
        Column(m, cut="none", justify="right", drop=0 if m == table.headline else _TERMINAL_DROP.get(m, 2))
        for m in table.metrics
    ]
    columns.append(Column(n_header(agg), cut="none", justify="right", drop=_DROP_N))
    deltas = _has_deltas(table)
    if deltas:
        columns.append(Column(f"Δ {table.headline}", cut="none", justify="right", drop=_DROP_DELTA))
    notes = has_notes(table)
    if notes:
        columns.append(Column("note", cut="end", min_width=10, drop=_DROP_NOTE))
    rows: list[list[Cell]] = []
    for row in table.rows:
        name = row.experiment + (" *" if row.is_baseline else "") + (" (leaky)" if row.leaky else "")
        cells: list[Cell] = [name, *(value_text(row.values.get(k)) for k in table.knob_keys)]
        cells += [_term_metric(row, m, shape.fold_stats) for m in table.metrics]
        cells.append(str(max(s.n for s in row.stats.values())))
        if deltas:
            cells.append(_term_delta(row, shape.fold_stats))
        if notes:
            cells.append(" ".join("; ".join(row.notes).split()))
        rows.append(cells)
    return columns, rows


def _has_deltas(table: GroupTable) -> bool:
    """A Δ column only where there is something to subtract: a baseline that never ran (or whose
    runs all failed) would fill it with dashes and push the knob names out (the footer says why)."""
    return bool(table.baseline) and table.baseline_seeds is not None


def _term_pivot(table: PivotTable, agg: str, shape: _Shape) -> tuple[list[Column], list[list[Cell]]]:
    corner = f"{table.row_key} \\ {table.col_key}"
    # The corner names both keys: it is cut only once the stats are folded and it still does not fit.
    columns = [Column(corner, cut="end", min_width=8 if shape.fold_stats else len(corner), grow=1)]
    # Grid columns are values of one key: on a very narrow terminal the rightmost go first.
    columns += [Column(value_text(c), cut="none", justify="right", drop=1) for c in table.col_values]
    rows: list[list[Cell]] = []
    for i, value in enumerate(table.row_values):
        cells: list[Cell] = [value_text(value)]
        for j in range(len(table.col_values)):
            cells.append(_term_stat(table.cells.get((i, j)), (i, j) in table.best, shape.fold_stats))
        rows.append(cells)
    return columns, rows


# Columns a reader misses less than the knobs' names: err1 is 100 - acc1, acc5 and the notes are
# secondary. A shape with named knobs that fits by leaving only these out beats numbered knobs.
_SPARED_FOR_NAMES = {"err1", "acc5", "note"}


def _fitted(build, table, agg: str, width: int) -> tuple[_Shape, list[Column], list[list[Cell]], Layout]:
    """The least compact shape with named knob headers that fits ``width``, else that fits by
    leaving out the fewest of err1, acc5 and the note; else numbered knobs (``k1``), columns dropped if need be."""
    tried = []
    for shape in _SHAPES:
        columns, rows = build(table, agg, shape)
        tried.append((shape, columns, rows, fit_table(columns, rows, width)))
    named = [t for t in tried if t[0].knob_headers != "index"]
    for fitted in named:
        if fitted[3].fits:
            return fitted
    spared = [t for t in named if not t[3].overflow and set(t[3].dropped) <= _SPARED_FOR_NAMES]
    if spared:  # the one that leaves out the fewest (the least compact of those)
        return min(spared, key=lambda t: len(t[3].dropped))
    return tried[-1]


def _footer(parts: list[str], dropped: list[str], width: int) -> Text:
    if dropped:
        parts.append(f"not shown at {width} columns: {', '.join(dropped)} (`--format md` has every column)")
    return Text(" · ".join(parts), style="dim")


def terminal_tables(tables: list[GroupTable], *, agg: str, width: int) -> list[RenderableType]:
    """One block per group for a terminal of ``width`` columns: title, table, caption and legend.

    The table keeps to the width: knob headers shortened (``lr`` for ``optim.lr``) or numbered
    (``k1``) with a legend, ``± std`` folded under the mean, long names cut in the middle; numbers
    are never cut (err1 and acc5, then notes, are left out last of all, and the footer says so).
    """
    if not tables:
        return [Text("No completed runs match.")]
    blocks: list[RenderableType] = []
    for table in tables:
        shape, columns, rows, layout = _fitted(_term_group, table, agg, width)
        parts = [table_caption(table, agg)]
        if any(row.is_baseline for row in table.rows):
            parts.append("* baseline")
        if table.baseline and not _has_deltas(table):
            parts.append(f"no Δ: baseline {table.baseline} has no result yet")
        full = dict(zip(_knob_headers(table.knob_keys, shape.knob_headers), table.knob_keys, strict=True))
        shown = {columns[i].header for i in layout.keep}
        legend = [f"{h} = {k}" for h, k in full.items() if h != k and h in shown]
        if legend:
            parts.append(", ".join(legend))
        dropped = [full.get(h, h) for h in layout.dropped]
        blocks.append(
            Group(
                Text(table.group, style="bold"),
                rich_table(columns, rows, layout),
                _footer(parts, dropped, width),
            )
        )
    return blocks


def terminal_pivots(tables: list[PivotTable], *, agg: str, width: int) -> list[RenderableType]:
    """``terminal_tables`` for pivot grids."""
    if not tables:
        return [Text("No completed runs match.")]
    blocks: list[RenderableType] = []
    for table in tables:
        _, columns, rows, layout = _fitted(_term_pivot, table, agg, width)
        parts = [f"{table.metric} by {table.row_key} × {table.col_key}, {agg_words(agg)}"]
        if table.baseline_stat is not None:
            parts.append(f"baseline {table.baseline}: {stat_text(table.baseline_stat)}")
        blocks.append(
            Group(
                Text(table.group, style="bold"),
                rich_table(columns, rows, layout),
                _footer(parts, layout.dropped, width),
            )
        )
    return blocks
