"""``mdtui report``: result tables from the SQLite index (docs/results.md).

One table per group, one row per experiment: its runs (seeds) aggregated, the knobs it varies, the
metrics, and the difference to the group's baseline; or, with ``pivot``, a grid of one metric over
two config keys (e.g. loss.name x loss.threshold). Only the index is read (no run directory is
opened), so ten thousand runs render in well under a second. This module builds the tables;
``mdtui.results.render`` writes them as markdown, csv, json, LaTeX or terminal tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from mdtui.results import render as report_render
from mdtui.results import stats
from mdtui.results.compare import flatten_config
from mdtui.results.log import is_long_tailed
from mdtui.results.tables import GroupTable, IndexRow, PivotTable, Row, Stat
from mdtui.runs.status import RunStatus

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunStore

# metric name -> (RunRecord field, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "acc1": ("best_acc1", True),
    "acc5": ("acc5", True),
    "err1": ("err1", False),
    "many": ("many", True),
    "medium": ("medium", True),
    "few": ("few", True),
    "last_acc1": ("last_acc1", True),
}
LT_METRICS = ("many", "medium", "few")
AGGS = ("mean", "best", "last")
FORMATS = ("md", "csv", "json", "latex")


class ReportError(ValueError):
    """A report request that cannot be met (unknown metric, key, or selector); the text says why."""


# --------------------------------------------------------------------------- aggregation (pure)


def aggregate(runs: Sequence[IndexRow], metric: str, agg: str, headline: str) -> Stat:
    """``metric`` over ``runs`` (newest first): mean ± sample std, or the best/latest run's value."""
    attr, _ = METRICS[metric]
    if agg == "mean":
        values = [v for v in (getattr(r, attr) for r in runs) if v is not None]
        if not values:
            return Stat(None, None, 0)
        mean = math.fsum(values) / len(values)
        std = None
        if len(values) > 1:
            std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return Stat(mean, std, len(values))
    chosen = pick_run(runs, agg, headline)
    return Stat(getattr(chosen, attr) if chosen else None, None, len(runs))


def pick_run(runs: Sequence[IndexRow], agg: str, headline: str) -> IndexRow | None:
    """The run an aggregation of ``best``/``last`` reports: best headline value, or the newest."""
    if not runs:
        return None
    if agg == "last":
        return max(runs, key=lambda r: (r.created_t, r.run_id))
    attr, higher = METRICS[headline]
    scored = [r for r in runs if getattr(r, attr) is not None]
    if not scored:
        return runs[0]
    return (max if higher else min)(scored, key=lambda r: getattr(r, attr))


def mark_best(values: Sequence[float | None], higher: bool) -> set[int]:
    """Indices holding the best value (ties at the printed precision all count)."""
    shown = [round(v, 2) if v is not None else None for v in values]
    present = [v for v in shown if v is not None]
    if not present:
        return set()
    target = max(present) if higher else min(present)
    return {i for i, v in enumerate(shown) if v == target}


# --------------------------------------------------------------------------- selection


_INDEX_COLUMNS = tuple(IndexRow.__dataclass_fields__)


def _completed_by_experiment(store: RunStore) -> dict[str, list[IndexRow]]:
    """Completed runs per experiment, newest first, straight from the index table.

    Building 10,000 ``RunRecord`` objects (paths, JSON fields) costs more than the whole report, so
    this asks the store for the raw index columns (named after ``RunRecord`` fields; ``sweep`` comes
    as its JSON text, which ``IndexRow`` parses only when a table needs it).
    """
    columns = [c for c in _INDEX_COLUMNS if c != "sweep_json"]
    rows = store.index_rows([*columns, "sweep"], statuses=[RunStatus.COMPLETED])
    records = [IndexRow(**dict(zip([*columns, "sweep_json"], row, strict=True))) for row in rows]
    out: dict[str, list[IndexRow]] = {}
    for rec in records:
        rec.leaky = bool(rec.leaky)
        rec.note = rec.note or ""
        out.setdefault(rec.experiment, []).append(rec)
    return out


def _select(plan: Plan, runs: dict[str, list[IndexRow]], selectors: Sequence[str]) -> dict[str, list[str]]:
    """group -> experiment names (plan order, then experiments only the index still knows)."""
    from mdtui.registry.plan import closest

    recorded_group = {name: recs[0].group for name, recs in runs.items()}
    wanted: dict[str, None] = {}
    for ref in selectors:
        if ref in plan.experiments or ref in plan.tables or plan.group(ref):
            from mdtui.registry.plan import select_experiments

            wanted.update((e.name, None) for e in select_experiments(plan, [ref]))
        elif ref in runs:
            wanted[ref] = None
        elif ref in recorded_group.values():
            wanted.update((n, None) for n, g in recorded_group.items() if g == ref)
        else:
            names = [*plan.experiments, *plan.tables, *plan.groups(), *runs, *recorded_group.values()]
            near = closest(ref, dict.fromkeys(names), n=5)
            hint = (
                f"; closest: {', '.join(near)}" if near else "; give a group, a table or an experiment name"
            )
            raise ReportError(f'no group or experiment named "{ref}"{hint}')
    names = list(wanted) if selectors else [*plan.experiments, *runs]
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        exp = plan.experiments.get(name)
        group = exp.group if exp is not None else recorded_group.get(name)
        if group is not None and (name in runs or exp is not None):
            groups.setdefault(group, []).append(name)
    return groups


def _knobs(plan: Plan, exp: Experiment | None, runs: list[IndexRow]) -> dict[str, Any]:
    if exp is None:
        return dict(runs[0].sweep) if runs else {}
    from mdtui.registry.plan import knobs

    return knobs(plan, exp)


def _config_value(plan: Plan, name: str, runs: list[IndexRow], key: str, flat_cache: dict) -> Any:
    exp = plan.experiments.get(name)
    if exp is None:
        return (runs[0].sweep if runs else {}).get(key)
    if name not in flat_cache:
        flat_cache[name] = flatten_config(exp.config)
    return flat_cache[name].get(key)


# --------------------------------------------------------------------------- tables


def build_tables(
    store: RunStore,
    plan: Plan,
    selectors: Sequence[str] = (),
    *,
    metric: str = "acc1",
    agg: str = "mean",
    baseline: bool = True,
) -> list[GroupTable]:
    """One ``GroupTable`` per selected group that has completed runs."""
    _check(metric, agg)
    runs = _completed_by_experiment(store)
    tables: list[GroupTable] = []
    flat: dict[str, dict[str, Any]] = {}
    for group, names in _select(plan, runs, selectors).items():
        rows = []
        for name in names:
            if not runs.get(name):
                continue
            exp = plan.experiments.get(name)
            rows.append(
                Row(
                    name,
                    runs[name],
                    _knobs(plan, exp, runs[name]),
                    is_baseline=bool(exp and exp.baseline),
                    paper=dict(exp.paper) if exp is not None else {},
                )
            )
        if not rows:
            continue
        knob_keys = list(dict.fromkeys(k for row in rows for k in row.knobs))
        for row in rows:
            row.values = {
                k: row.knobs.get(k, _config_value(plan, row.experiment, row.runs, k, flat)) for k in knob_keys
            }
        long_tailed = any(
            is_long_tailed(plan.experiments[r.experiment].config if r.experiment in plan.experiments else {})
            or any(is_long_tailed({}, x.many, x.medium, x.few) for x in r.runs)
            for r in rows
        )
        metrics = ["acc1", "acc5", "err1", *(LT_METRICS if long_tailed else ())]
        if metric not in metrics:
            metrics.append(metric)
        for row in rows:
            row.stats = {m: aggregate(row.runs, m, agg, metric) for m in metrics}
        for m in metrics:
            for i in mark_best([row.stats[m].mean for row in rows], METRICS[m][1]):
                rows[i].best.add(m)
        table = GroupTable(group, knob_keys, metrics, rows, metric)
        if baseline:
            _fill_deltas(plan, table, runs, agg)
        tables.append(table)
    return tables


def _baseline_name(plan: Plan, group: str) -> str | None:
    return next((e.name for e in plan.group(group) if e.baseline), None)


def metric_values(runs: Sequence[IndexRow], metric: str) -> list[float]:
    """The recorded values of ``metric`` over ``runs`` (one per seed; missing ones left out)."""
    attr, _ = METRICS[metric]
    return [v for v in (getattr(r, attr) for r in runs) if v is not None]


def _fill_deltas(plan: Plan, table: GroupTable, runs: dict[str, list[IndexRow]], agg: str) -> None:
    """Δ of the headline metric against the baseline experiment's aggregate (even when unselected).

    With ``agg = mean`` each Δ also gets its Welch interval over seeds (``mdtui.results.stats``).
    """
    table.baseline = _baseline_name(plan, table.group)
    if table.baseline is None or not runs.get(table.baseline):
        return
    ref = aggregate(runs[table.baseline], table.headline, agg, table.headline).mean
    if ref is None:
        return
    base = stats.summarize(metric_values(runs[table.baseline], table.headline))
    table.baseline_seeds = base
    for row in table.rows:
        value = row.stats[table.headline].mean
        if value is not None and not row.is_baseline:
            row.delta = value - ref
            if agg == "mean":
                row.delta_ci = stats.delta_interval(
                    stats.summarize(metric_values(row.runs, table.headline)), base
                )


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def build_pivots(
    store: RunStore,
    plan: Plan,
    selectors: Sequence[str],
    pivot: tuple[str, str],
    *,
    metric: str = "acc1",
    agg: str = "mean",
    baseline: bool = True,
) -> list[PivotTable]:
    """One grid per group: ``metric`` aggregated over every run whose config has those two values."""
    _check(metric, agg)
    row_key, col_key = pivot
    runs = _completed_by_experiment(store)
    flat: dict[str, dict[str, Any]] = {}
    out: list[PivotTable] = []
    seen_keys: set[str] = set()
    for group, names in _select(plan, runs, selectors).items():
        cells_runs: dict[tuple[Any, Any], list[IndexRow]] = {}
        for name in names:
            if not runs.get(name):
                continue
            values = [_config_value(plan, name, runs[name], k, flat) for k in (row_key, col_key)]
            seen_keys.update(flat.get(name, runs[name][0].sweep))
            cells_runs.setdefault((values[0], values[1]), []).extend(runs[name])
        if not cells_runs or all(r is None and c is None for r, c in cells_runs):
            continue
        rows = sorted({r for r, _ in cells_runs}, key=_sort_key)
        cols = sorted({c for _, c in cells_runs}, key=_sort_key)
        cells = {
            (rows.index(r), cols.index(c)): aggregate(recs, metric, agg, metric)
            for (r, c), recs in cells_runs.items()
        }
        keys = list(cells)
        best = {keys[i] for i in mark_best([cells[k].mean for k in keys], METRICS[metric][1])}
        table = PivotTable(group, row_key, col_key, metric, rows, cols, cells, best)
        base = _baseline_name(plan, group) if baseline else None
        if base and runs.get(base):
            table.baseline, table.baseline_stat = base, aggregate(runs[base], metric, agg, metric)
        out.append(table)
    missing = [k for k in pivot if k not in seen_keys]
    if missing and seen_keys:
        near = _closest_keys(missing[0], seen_keys)
        raise ReportError(f'no selected experiment sets "{missing[0]}"{near}')
    return out


def _closest_keys(key: str, keys: Iterable[str]) -> str:
    from mdtui.registry.plan import closest

    near = closest(key, sorted(keys), n=5)
    return f"; closest keys: {', '.join(near)}" if near else ""


def _check(metric: str, agg: str) -> None:
    if metric not in METRICS:
        raise ReportError(f'unknown metric "{metric}"; choose one of: {", ".join(METRICS)}')
    if agg not in AGGS:
        raise ReportError(f'unknown aggregation "{agg}"; choose one of: {", ".join(AGGS)}')


def render_report(
    store: RunStore,
    plan: Plan,
    selectors: Sequence[str] = (),
    *,
    fmt: str = "md",
    metric: str = "acc1",
    agg: str = "mean",
    pivot: tuple[str, str] | None = None,
    baseline: bool = True,
) -> str:
    """The report as text in ``fmt`` (md | csv | json | latex). Raises ReportError for bad requests."""
    if fmt not in FORMATS:
        raise ReportError(f'unknown format "{fmt}"; choose one of: table, {", ".join(FORMATS)}')
    if pivot is not None:
        pivots = build_pivots(store, plan, selectors, pivot, metric=metric, agg=agg, baseline=baseline)
        return report_render.render_pivots(pivots, fmt, agg=agg)
    tables = build_tables(store, plan, selectors, metric=metric, agg=agg, baseline=baseline)
    return report_render.render_tables(tables, fmt, agg=agg)


# --------------------------------------------------------------------------- seeds needed


def seeds_needed_rows(table: GroupTable) -> list[tuple[Row, stats.SeedsNeeded]]:
    """Per experiment of ``table`` (its baseline aside): the seeds that would separate it from the
    baseline at the observed spread (``mdtui.results.stats.seeds_needed``)."""
    if table.baseline_seeds is None:
        return []
    out = []
    for row in table.rows:
        if row.is_baseline or row.experiment == table.baseline:
            continue
        mine = stats.summarize(metric_values(row.runs, table.headline))
        out.append((row, stats.seeds_needed(mine, table.baseline_seeds)))
    return out


def render_seeds_needed(
    store: RunStore, plan: Plan, selectors: Sequence[str] = (), *, fmt: str = "md", metric: str = "acc1"
) -> str:
    """``mdtui report --seeds-needed``: how many seeds per experiment would separate each experiment
    from its group's baseline, at the spread the seeds so far show (md or json)."""
    if fmt not in ("md", "json"):
        raise ReportError(f'--seeds-needed writes md or json, not "{fmt}"')
    tables = build_tables(store, plan, selectors, metric=metric, agg="mean", baseline=True)
    return report_render.render_seeds_needed(tables, [seeds_needed_rows(t) for t in tables], fmt)
