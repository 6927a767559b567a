"""The shapes of a report: rows read from the index, aggregated statistics, group and pivot tables.

Building (report.py) and rendering (render.py) both speak these; neither imports the other's logic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mdtui.results.stats import Delta, Summary


@dataclass(slots=True)
class IndexRow:
    """The index columns a report needs, read without building full ``RunRecord`` objects."""

    run_id: str
    experiment: str
    group: str
    created_t: float
    seed: int
    sweep_json: str | None
    leaky: bool
    note: str
    best_acc1: float | None
    acc5: float | None
    err1: float | None
    many: float | None
    medium: float | None
    few: float | None
    last_acc1: float | None

    @property
    def sweep(self) -> dict[str, Any]:
        return json.loads(self.sweep_json) if self.sweep_json else {}


@dataclass(frozen=True)
class Stat:
    """An aggregated value: the mean (or the chosen run's value), its std over seeds, and n."""

    mean: float | None
    std: float | None = None
    n: int = 0


@dataclass
class Row:
    experiment: str
    runs: list[IndexRow]  # completed runs, newest first
    knobs: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # knob column -> this row's value
    is_baseline: bool = False
    stats: dict[str, Stat] = field(default_factory=dict)
    delta: float | None = None
    # the Δ's Welch interval over seeds (``--agg mean`` only: a best or latest run has no spread)
    delta_ci: Delta | None = None
    best: set[str] = field(default_factory=set)  # metric columns where this row is the best
    paper: dict[str, Any] = field(default_factory=dict)  # the published figures (experiment key)

    @property
    def leaky(self) -> bool:
        return any(r.leaky for r in self.runs)

    @property
    def notes(self) -> list[str]:
        return list(dict.fromkeys(r.note for r in self.runs if r.note))


@dataclass
class GroupTable:
    group: str
    knob_keys: list[str]
    metrics: list[str]
    rows: list[Row]
    headline: str
    baseline: str | None = None
    baseline_seeds: Summary | None = None  # the baseline's headline metric over its seeds


@dataclass
class PivotTable:
    group: str
    row_key: str
    col_key: str
    metric: str
    row_values: list[Any]
    col_values: list[Any]
    cells: dict[tuple[int, int], Stat]
    best: set[tuple[int, int]]
    baseline: str | None = None
    baseline_stat: Stat | None = None
