"""Writers for ``mdtui report`` tables: GitHub-flavoured markdown, csv, json and LaTeX.

Markdown marks the best value of each metric column in bold; csv and json mark it with a ``best``
field (csv: the metric names, space-separated; json: ``"best": true``); LaTeX with ``\\textbf``.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from mdtui.results.markdown import format_value, md_code, md_escape
from mdtui.results.tables import GroupTable, PivotTable, Row, Stat

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
            cells.append(f"**{text}**" if metric in row.best else text)
        cells.append(str(max(s.n for s in row.stats.values())))
        if table.baseline:
            cells.append(_delta(row.delta))
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
            caption = f"{table.headline} per experiment, {_agg_words(agg)}"
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
                "notes": row.notes,
                "run_ids": [r.run_id for r in row.runs],
            }
            for row in table.rows
        ],
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
    header += ["n", f"delta_{headline}", "best", "note"]
    rows: list[list[Any]] = [header]
    for table in tables:
        for row in table.rows:
            cells: list[Any] = [table.group, row.experiment, int(row.is_baseline), int(row.leaky)]
            cells += [_csv_value(row.values.get(k)) for k in knob_keys]
            for m in metrics:
                stat = row.stats.get(m, Stat(None))
                cells += [_csv_number(stat.mean), _csv_number(stat.std)]
            best = " ".join(m for m in table.metrics if m in row.best)
            cells += [
                max(s.n for s in row.stats.values()),
                _csv_number(row.delta),
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
        cells += [_latex_stat(row.stats[m], m in row.best) for m in table.metrics]
        cells.append(str(max(s.n for s in row.stats.values())))
        if table.baseline:
            cells.append(latex_escape(_delta(row.delta)))
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
