"""Writers for ``mdtui report`` tables: GitHub-flavoured markdown, csv, json, LaTeX, and a terminal.

Markdown marks the best value of each metric column in bold; csv and json mark it with a ``best``
field (csv: the metric names, space-separated; json: ``"best": true``); LaTeX with ``\\textbf``.
The terminal form is a Rich table per group that fits the width it is given (see ``terminal_tables``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from mdtui.results.markdown import format_value, md_code, md_escape
from mdtui.results.stats import SeedsNeeded, format_delta
from mdtui.results.tables import GroupTable, PivotTable, Row, Stat
from mdtui.system.terminal import Cell, Column, Layout, fit_table, rich_table

DASH = "–"


def _num(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def stat_text(stat: Stat, *, pm: str = " ± ") -> str:
    """``70.72 ± 0.31`` (std only when there are two or more runs)."""
    if stat.mean is None:
        return DASH
    return _num(stat.mean) + (f"{pm}{stat.std:.2f}" if stat.std is not None else "")


def _delta(value: float | None) -> str:
    return DASH if value is None else f"{value:+.2f}"


def delta_text(row: Row) -> str:
    """The Δ cell: ``+0.41 ± 0.63 (within noise)``, ``+1.20 ± 0.35``, ``+0.4 (1 seed)``, or a bare
    ``+0.41`` when the runs were not averaged (``--agg best|last``)."""
    return format_delta(row.delta_ci) if row.delta_ci is not None else _delta(row.delta)


def paper_text(row: Row, metric: str) -> str:
    """`` (paper 82.5)`` after a measured figure whose experiment names the published one."""
    figure = row.paper.get(metric)
    return "" if figure is None else f" (paper {figure:g})"


def _has_intervals(table: GroupTable) -> bool:
    return any(row.delta_ci is not None for row in table.rows)


def _caption(table: GroupTable, agg: str) -> str:
    caption = f"{table.headline} per experiment, {_agg_words(agg)}"
    if _has_intervals(table):
        caption += "; Δ ± 95% Welch interval over seeds (within noise: it spans 0)"
    return caption


def _value(value: Any) -> str:
    return DASH if value is None else format_value(value)


def _has_notes(table: GroupTable) -> bool:
    return any(row.notes for row in table.rows)


def _n_header(agg: str) -> str:
    return "n" if agg == "mean" else "runs"


# --------------------------------------------------------------------------- markdown


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_cell_code(text: str) -> str:
    # In a GFM table a pipe splits the cell even inside a code span.
    return md_code(text).replace("|", "\\|")


def _md_experiment(row: Row) -> str:
    text = _md_cell_code(row.experiment)
    if row.is_baseline:
        text += " (baseline)"
    return text + (" **leaky**" if row.leaky else "")


def _md_table(table: GroupTable, agg: str) -> list[str]:
    header = ["experiment", *(_md_cell_code(k) for k in table.knob_keys), *table.metrics, _n_header(agg)]
    align = ["---", *(":---" for _ in table.knob_keys), *("---:" for _ in table.metrics), "---:"]
    if table.baseline:
        header.append(f"Δ {table.headline}")
        align.append("---:")
    notes = _has_notes(table)
    if notes:
        header.append("note")
        align.append("---")
    lines = [_md_row(header), _md_row(align)]
    for row in table.rows:
        cells = [_md_experiment(row), *(md_escape(_value(row.values.get(k))) for k in table.knob_keys)]
        for metric in table.metrics:
            text = stat_text(row.stats[metric])
            text = f"**{text}**" if metric in row.best else text
            cells.append(text + paper_text(row, metric))
        cells.append(str(max(s.n for s in row.stats.values())))
        if table.baseline:
            cells.append(delta_text(row))
        if notes:
            cells.append(md_escape("; ".join(row.notes)))
        lines.append(_md_row(cells))
    return lines


def _md_pivot(table: PivotTable) -> list[str]:
    corner = f"{_md_cell_code(table.row_key)} \\\\ {_md_cell_code(table.col_key)}"
    lines = [
        _md_row([corner, *(md_escape(_value(c)) for c in table.col_values)]),
        _md_row([":---", *("---:" for _ in table.col_values)]),
    ]
    for i, value in enumerate(table.row_values):
        cells = [md_escape(_value(value))]
        for j in range(len(table.col_values)):
            stat = table.cells.get((i, j))
            text = stat_text(stat) if stat is not None else ""
            if stat is not None and (i, j) in table.best:
                text = f"**{text}**"
            cells.append(text)
        lines.append(_md_row(cells))
    return lines


# --------------------------------------------------------------------------- entry points


def render_tables(tables: list[GroupTable], fmt: str, *, agg: str) -> str:
    if fmt == "json":
        return (
            json.dumps({"agg": agg, "groups": [_json_table(t) for t in tables]}, indent=2, ensure_ascii=False)
            + "\n"
        )
    if fmt == "csv":
        return _csv_tables(tables)
    if not tables:
        return "No completed runs match.\n" if fmt == "md" else "% no completed runs match\n"
    blocks = []
    for table in tables:
        if fmt == "latex":
            blocks.append(_latex_table(table, agg))
        else:
            caption = _caption(table, agg)
            blocks.append(
                "\n".join([f"## {md_escape(table.group)}", "", *_md_table(table, agg), "", caption])
            )
    return "\n\n".join(blocks) + "\n"


def render_pivots(tables: list[PivotTable], fmt: str, *, agg: str) -> str:
    if fmt == "json":
        return (
            json.dumps({"agg": agg, "pivots": [_json_pivot(t) for t in tables]}, indent=2, ensure_ascii=False)
            + "\n"
        )
    if fmt == "csv":
        return _csv_pivots(tables)
    if not tables:
        return "No completed runs match.\n" if fmt == "md" else "% no completed runs match\n"
    blocks = []
    for table in tables:
        if fmt == "latex":
            blocks.append(_latex_pivot(table))
            continue
        caption = f"{table.metric} by {table.row_key} × {table.col_key}, {_agg_words(agg)}"
        if table.baseline_stat is not None:
            caption += f"; baseline {md_code(table.baseline or '')}: {stat_text(table.baseline_stat)}"
        blocks.append(
            "\n".join([f"## {md_escape(table.group)}", "", *_md_pivot(table), "", md_escape_caption(caption)])
        )
    return "\n\n".join(blocks) + "\n"


def md_escape_caption(text: str) -> str:
    return text.replace("|", "\\|")


def _agg_words(agg: str) -> str:
    return {"mean": "mean ± std over runs", "best": "best run", "last": "latest run"}[agg]


# --------------------------------------------------------------------------- seeds needed


def seeds_needed_md(tables: list[GroupTable], needed: list[list[tuple[Row, SeedsNeeded]]]) -> str:
    """One table per group: each experiment's Δ to the baseline, its seeds, and the seeds needed."""
    if not tables:
        return "No completed runs match.\n"
    blocks = []
    for table, rows in zip(tables, needed, strict=True):
        lines = [f"## {md_escape(table.group)}", ""]
        if table.baseline is None or table.baseline_seeds is None:
            why = (
                "has no baseline"
                if table.baseline is None
                else f"baseline {md_code(table.baseline)} has no result yet"
            )
            lines.append(
                f"The group {why}: nothing to compare against (set baseline = true on one experiment)."
            )
        elif not rows:
            lines.append(f"Only the baseline {md_code(table.baseline)} has results.")
        else:
            h = table.headline
            lines += [
                _md_row(
                    ["experiment", h, f"Δ {h} vs {_md_cell_code(table.baseline)}", "seeds", "seeds needed"]
                ),
                _md_row(["---", "---:", "---:", "---:", "---"]),
            ]
            for row, answer in rows:
                seeds = f"{row.stats[h].n} vs {table.baseline_seeds.n}"
                cells = [_md_cell_code(row.experiment), stat_text(row.stats[h]), delta_text(row), seeds]
                lines.append(_md_row([*cells, md_escape(answer.text())]))
            lines += [
                "",
                f"seeds per experiment for the 95% interval of Δ {h} to exclude 0,"
                " at the pooled spread and the Δ seen so far",
            ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def seeds_needed_json(tables: list[GroupTable], needed: list[list[tuple[Row, SeedsNeeded]]]) -> str:
    groups = []
    for table, rows in zip(tables, needed, strict=True):
        base = table.baseline_seeds
        groups.append(
            {
                "group": table.group,
                "metric": table.headline,
                "baseline": table.baseline,
                "baseline_n": base.n if base is not None else 0,
                "rows": [
                    {
                        "experiment": row.experiment,
                        "n": row.stats[table.headline].n,
                        "delta": row.delta,
                        "delta_ci": _delta_ci_json(row),
                        "pooled_sd": answer.pooled_sd,
                        "seeds_needed": answer.seeds,
                        "reason": answer.reason or None,
                    }
                    for row, answer in rows
                ],
            }
        )
    return json.dumps({"groups": groups}, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- json / csv


def _stat_json(stat: Stat, best: bool) -> dict[str, Any]:
    return {"mean": stat.mean, "std": stat.std, "n": stat.n, "best": best}


def _json_table(table: GroupTable) -> dict[str, Any]:
    return {
        "group": table.group,
        "metric": table.headline,
        "baseline": table.baseline,
        "knobs": table.knob_keys,
        "metrics": table.metrics,
        "rows": [
            {
                "experiment": row.experiment,
                "baseline": row.is_baseline,
                "leaky": row.leaky,
                "knobs": {k: row.values.get(k) for k in table.knob_keys},
                "n": max(s.n for s in row.stats.values()),
                "metrics": {m: _stat_json(row.stats[m], m in row.best) for m in table.metrics},
                "delta": row.delta,
                "delta_ci": _delta_ci_json(row),
                "paper": row.paper or None,
                "notes": row.notes,
                "run_ids": [r.run_id for r in row.runs],
            }
            for row in table.rows
        ],
    }


def _delta_ci_json(row: Row) -> dict[str, Any] | None:
    d = row.delta_ci
    if d is None:
        return None
    return {
        "level": d.level,
        "half_width": d.half_width,
        "low": d.low,
        "high": d.high,
        "df": d.df,
        "n": d.n,
        "n_baseline": d.n_base,
        "verdict": d.verdict,
    }


def _json_pivot(table: PivotTable) -> dict[str, Any]:
    cells = [
        [
            _stat_json(table.cells[(i, j)], (i, j) in table.best) if (i, j) in table.cells else None
            for j in range(len(table.col_values))
        ]
        for i in range(len(table.row_values))
    ]
    base = table.baseline_stat
    return {
        "group": table.group,
        "metric": table.metric,
        "row_key": table.row_key,
        "col_key": table.col_key,
        "rows": table.row_values,
        "cols": table.col_values,
        "cells": cells,
        "baseline": table.baseline,
        "baseline_value": None if base is None else _stat_json(base, False),
    }


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _csv_value(value: Any) -> str:
    return "" if value is None else format_value(value)


def _csv_tables(tables: list[GroupTable]) -> str:
    """One long table: group, experiment, knobs (union), each metric and its std, n, Δ, best, notes."""
    knob_keys = list(dict.fromkeys(k for t in tables for k in t.knob_keys))
    metrics = list(dict.fromkeys(m for t in tables for m in t.metrics))
    headline = tables[0].headline if tables else "acc1"
    header = ["group", "experiment", "baseline", "leaky", *knob_keys]
    header += [col for m in metrics for col in (m, f"{m}_std")]
    header += ["n", f"delta_{headline}", f"delta_{headline}_ci95", "delta_verdict"]
    papers = [m for m in metrics if any(m in row.paper for t in tables for row in t.rows)]
    header += [f"paper_{m}" for m in papers]
    header += ["best", "note"]
    rows: list[list[Any]] = [header]
    for table in tables:
        for row in table.rows:
            cells: list[Any] = [table.group, row.experiment, int(row.is_baseline), int(row.leaky)]
            cells += [_csv_value(row.values.get(k)) for k in knob_keys]
            for m in metrics:
                stat = row.stats.get(m, Stat(None))
                cells += [_csv_number(stat.mean), _csv_number(stat.std)]
            best = " ".join(m for m in table.metrics if m in row.best)
            ci = row.delta_ci
            cells += [
                max(s.n for s in row.stats.values()),
                _csv_number(row.delta),
                _csv_number(ci.half_width if ci is not None else None),
                ci.verdict if ci is not None else "",
                *(_csv_number(row.paper.get(m)) for m in papers),
                best,
                "; ".join(row.notes),
            ]
            rows.append(cells)
    return _csv_text(rows)


def _csv_pivots(tables: list[PivotTable]) -> str:
    """Long form: one line per grid cell (group, row value, column value, mean, std, n, best)."""
    if not tables:
        return _csv_text([["group", "row", "col", "mean", "std", "n", "best"]])
    first = tables[0]
    rows: list[list[Any]] = [
        ["group", first.row_key, first.col_key, first.metric, f"{first.metric}_std", "n", "best"]
    ]
    for table in tables:
        for (i, j), stat in sorted(table.cells.items()):
            rows.append(
                [
                    table.group,
                    _csv_value(table.row_values[i]),
                    _csv_value(table.col_values[j]),
                    _csv_number(stat.mean),
                    _csv_number(stat.std),
                    stat.n,
                    "*" if (i, j) in table.best else "",
                ]
            )
    return _csv_text(rows)


# --------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
    "±": r"$\pm$",
    "×": r"$\times$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_stat(stat: Stat | None, best: bool) -> str:
    if stat is None:
        return ""
    text = stat_text(stat, pm=" $\\pm$ ")
    return f"\\textbf{{{text}}}" if best else text


def _latex_block(caption: str, spec: str, header: list[str], body: list[list[str]]) -> str:
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
        *(" & ".join(cells) + " \\\\" for cells in body),
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
    ]
    return "\n".join(lines)


def _latex_table(table: GroupTable, agg: str) -> str:
    header = ["experiment", *map(latex_escape, table.knob_keys), *table.metrics, _n_header(agg)]
    if table.baseline:
        header.append(f"$\\Delta$ {table.headline}")
    body = []
    for row in table.rows:
        name = latex_escape(row.experiment) + (" (baseline)" if row.is_baseline else "")
        cells = [name + (" \\textbf{leaky}" if row.leaky else "")]
        cells += [latex_escape(_value(row.values.get(k))) for k in table.knob_keys]
        cells += [
            _latex_stat(row.stats[m], m in row.best) + latex_escape(paper_text(row, m)) for m in table.metrics
        ]
        cells.append(str(max(s.n for s in row.stats.values())))
        if table.baseline:
            cells.append(latex_escape(delta_text(row)))
        body.append(cells)
    spec = "l" + "l" * len(table.knob_keys) + "r" * (len(header) - 1 - len(table.knob_keys))
    return _latex_block(table.group, spec, header, body)


def _latex_pivot(table: PivotTable) -> str:
    header = [f"{latex_escape(table.row_key)} / {latex_escape(table.col_key)}"]
    header += [latex_escape(_value(c)) for c in table.col_values]
    body = [
        [latex_escape(_value(value))]
        + [_latex_stat(table.cells.get((i, j)), (i, j) in table.best) for j in range(len(table.col_values))]
        for i, value in enumerate(table.row_values)
    ]
    caption = f"{table.group}: {table.metric} by {table.row_key} × {table.col_key}"
    return _latex_block(caption, "l" + "r" * len(table.col_values), header, body)


# --------------------------------------------------------------------------- terminal

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
    columns.append(Column(_n_header(agg), cut="none", justify="right", drop=_DROP_N))
    if table.baseline:
        columns.append(Column(f"Δ {table.headline}", cut="none", justify="right", drop=_DROP_DELTA))
    notes = _has_notes(table)
    if notes:
        columns.append(Column("note", cut="end", min_width=10, drop=_DROP_NOTE))
    rows: list[list[Cell]] = []
    for row in table.rows:
        name = row.experiment + (" *" if row.is_baseline else "") + (" (leaky)" if row.leaky else "")
        cells: list[Cell] = [name, *(_value(row.values.get(k)) for k in table.knob_keys)]
        cells += [_term_metric(row, m, shape.fold_stats) for m in table.metrics]
        cells.append(str(max(s.n for s in row.stats.values())))
        if table.baseline:
            cells.append(_term_delta(row, shape.fold_stats))
        if notes:
            cells.append(" ".join("; ".join(row.notes).split()))
        rows.append(cells)
    return columns, rows


def _term_pivot(table: PivotTable, agg: str, shape: _Shape) -> tuple[list[Column], list[list[Cell]]]:
    corner = f"{table.row_key} \\ {table.col_key}"
    # The corner names both keys: it is cut only once the stats are folded and it still does not fit.
    columns = [Column(corner, cut="end", min_width=8 if shape.fold_stats else len(corner), grow=1)]
    # Grid columns are values of one key: on a very narrow terminal the rightmost go first.
    columns += [Column(_value(c), cut="none", justify="right", drop=1) for c in table.col_values]
    rows: list[list[Cell]] = []
    for i, value in enumerate(table.row_values):
        cells: list[Cell] = [_value(value)]
        for j in range(len(table.col_values)):
            cells.append(_term_stat(table.cells.get((i, j)), (i, j) in table.best, shape.fold_stats))
        rows.append(cells)
    return columns, rows


def _fitted(build, table, agg: str, width: int) -> tuple[_Shape, list[Column], list[list[Cell]], Layout]:
    """The least compact shape whose table fits ``width`` (else the most compact, columns dropped)."""
    for shape in _SHAPES:
        columns, rows = build(table, agg, shape)
        layout = fit_table(columns, rows, width)
        if layout.fits:
            break
    return shape, columns, rows, layout


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
        parts = [_caption(table, agg)]
        if any(row.is_baseline for row in table.rows):
            parts.append("* baseline")
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
        parts = [f"{table.metric} by {table.row_key} × {table.col_key}, {_agg_words(agg)}"]
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
