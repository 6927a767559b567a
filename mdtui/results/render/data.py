"""Report tables as data for scripts: json (the best cells marked ``"best": true``) and csv (a
``best`` field naming the metrics, space-separated)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from mdtui.results.stats import SeedsNeeded
from mdtui.results.tables import GroupTable, PivotTable, Row, Stat
from mdtui.system.formats import format_value


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
                        "delta_ci": delta_ci_json(row),
                        "pooled_sd": answer.pooled_sd,
                        "seeds_needed": answer.seeds,
                        "reason": answer.reason or None,
                    }
                    for row, answer in rows
                ],
            }
        )
    return json.dumps({"groups": groups}, indent=2, ensure_ascii=False) + "\n"


def _stat_json(stat: Stat, best: bool) -> dict[str, Any]:
    return {"mean": stat.mean, "std": stat.std, "n": stat.n, "best": best}


def json_table(table: GroupTable) -> dict[str, Any]:
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
                "delta_ci": delta_ci_json(row),
                "paper": row.paper or None,
                "notes": row.notes,
                "run_ids": [r.run_id for r in row.runs],
            }
            for row in table.rows
        ],
    }


def delta_ci_json(row: Row) -> dict[str, Any] | None:
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


def json_pivot(table: PivotTable) -> dict[str, Any]:
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


def csv_tables(tables: list[GroupTable]) -> str:
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


def csv_pivots(tables: list[PivotTable]) -> str:
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


def json_tables(tables: list[GroupTable], agg: str) -> str:
    return (
        json.dumps({"agg": agg, "groups": [json_table(t) for t in tables]}, indent=2, ensure_ascii=False)
        + "\n"
    )


def json_pivots(tables: list[PivotTable], agg: str) -> str:
    return (
        json.dumps({"agg": agg, "pivots": [json_pivot(t) for t in tables]}, indent=2, ensure_ascii=False)
        + "\n"
    )
