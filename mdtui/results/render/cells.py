"""The words and numbers every report format shares: a statistic, a Δ, a published figure, a caption."""

from __future__ import annotations

from typing import Any

from mdtui.results.stats import format_delta
from mdtui.results.tables import GroupTable, Row, Stat
from mdtui.system.formats import fmt_paper, format_value

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
    return fmt_paper(row.paper.get(metric))


def has_intervals(table: GroupTable) -> bool:
    return any(row.delta_ci is not None for row in table.rows)


def table_caption(table: GroupTable, agg: str) -> str:
    caption = f"{table.headline} per experiment, {agg_words(agg)}"
    if has_intervals(table):
        caption += "; Δ ± 95% Welch interval over seeds (within noise: it spans 0)"
    return caption


def value_text(value: Any) -> str:
    return DASH if value is None else format_value(value)


def has_notes(table: GroupTable) -> bool:
    return any(row.notes for row in table.rows)


def n_header(agg: str) -> str:
    return "n" if agg == "mean" else "runs"


def agg_words(agg: str) -> str:
    return {"mean": "mean ± std over runs", "best": "best run", "last": "latest run"}[agg]
