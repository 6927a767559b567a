"""``mdtui compare``: what differs between runs (flattened config.json keys) and their metric deltas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.schema.catalog import expand_bare_names
from mdtui.system.fs import read_json

if TYPE_CHECKING:
    from mdtui.runs.store import RunRecord

# Keys that differ between runs by construction (the experiment is in the header already).
IGNORED_KEYS = ("run_id", "experiment")
# (label, RunRecord field, higher is better); best_epoch is printed 1-based.
COMPARE_METRICS: tuple[tuple[str, str, bool | None], ...] = (
    ("acc1", "best_acc1", True),
    ("acc5", "acc5", True),
    ("err1", "err1", False),
    ("many", "many", True),
    ("medium", "medium", True),
    ("few", "few", True),
    ("last_acc1", "last_acc1", True),
    ("best epoch", "best_epoch", None),
    ("epochs", "epochs_done", None),
)


class _Missing:
    def __repr__(self) -> str:
        return "(unset)"


MISSING: Any = _Missing()


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"name": "refl", "threshold": 0.4}}`` -> ``{"loss.name": "refl", "loss.threshold": 0.4}``.

    A named block written as a bare string (``loss = "ce"``) becomes ``loss.name``.
    """
    out: dict[str, Any] = {}
    for key, value in (config if prefix else expand_bare_names(config)).items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten_config(value, dotted))
        else:
            out[dotted] = value
    return out


@dataclass(frozen=True)
class MetricRow:
    name: str
    values: tuple[float | int | None, ...]
    deltas: tuple[float | None, ...]  # against the first run; None for the first run or unknown


@dataclass(frozen=True)
class Comparison:
    run_ids: tuple[str, ...]
    experiments: tuple[str, ...]
    config_rows: tuple[tuple[str, tuple[Any, ...]], ...]  # (key, value per run); MISSING when unset
    metric_rows: tuple[MetricRow, ...]


def config_diff(configs: Sequence[dict[str, Any]]) -> list[tuple[str, tuple[Any, ...]]]:
    """Keys (sorted) whose flattened values are not equal across all ``configs``."""
    flats = [flatten_config(c) for c in configs]
    keys = sorted({k for flat in flats for k in flat} - set(IGNORED_KEYS))
    rows = []
    for key in keys:
        values = tuple(flat.get(key, MISSING) for flat in flats)
        if any(v != values[0] or type(v) is not type(values[0]) for v in values[1:]):
            rows.append((key, values))
    return rows


def compare_runs(records: Sequence[RunRecord], configs: Sequence[dict[str, Any]] | None = None) -> Comparison:
    """Config differences and metric deltas (each run against the first) of ``records``."""
    if configs is None:
        configs = [read_json(Path(r.run_dir) / "config.json") or {} for r in records]
    metric_rows = []
    for label, attr, _ in COMPARE_METRICS:
        values = tuple(getattr(r, attr, None) for r in records)
        if label == "best epoch":
            values = tuple(v + 1 if isinstance(v, int) else None for v in values)
        if all(v is None for v in values):
            continue
        first = values[0]
        deltas = tuple(
            None if i == 0 or v is None or first is None else float(v) - float(first)
            for i, v in enumerate(values)
        )
        metric_rows.append(MetricRow(label, values, deltas))
    return Comparison(
        run_ids=tuple(r.run_id for r in records),
        experiments=tuple(r.experiment for r in records),
        config_rows=tuple(config_diff(configs)),
        metric_rows=tuple(metric_rows),
    )


def format_config_value(value: Any) -> str:
    from mdtui.system.formats import format_value

    return "(unset)" if value is MISSING else format_value(value)


def format_metric(value: float | int | None, delta: float | None, *, is_epoch: bool = False) -> str:
    """``72.35 (+1.02)``; epochs as integers."""
    if value is None:
        return "–"
    text = str(int(value)) if is_epoch else f"{value:.2f}"
    if delta is not None:
        text += f" ({delta:+.0f})" if is_epoch else f" ({delta:+.2f})"
    return text


def comparison_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and text rows: config keys that differ, then metrics with deltas against the first run."""
    header = [
        "",
        *(f"{rid}\n{exp}" for rid, exp in zip(comparison.run_ids, comparison.experiments, strict=True)),
    ]
    rows = [[key, *(format_config_value(v) for v in values)] for key, values in comparison.config_rows]
    for metric in comparison.metric_rows:
        is_epoch = metric.name in ("best epoch", "epochs")
        rows.append(
            [
                metric.name,
                *(
                    format_metric(v, d, is_epoch=is_epoch)
                    for v, d in zip(metric.values, metric.deltas, strict=True)
                ),
            ]
        )
    return header, rows


def format_comparison(comparison: Comparison) -> str:
    """Plain aligned text (for pipes and tests; the CLI draws the same rows as a Rich table)."""
    header, rows = comparison_rows(comparison)
    header = [h.replace("\n", " ") for h in header]
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    if not comparison.config_rows:
        lines.append("(the configs are identical apart from run ids)")
    return "\n".join(lines) + "\n"
