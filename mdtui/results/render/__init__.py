"""Writers for ``mdtui report`` tables, one module per format family.

``md_tables`` (GitHub-flavoured markdown), ``data`` (json and csv), ``latex``, and ``terminal`` (Rich tables
that fit a width); ``cells`` holds the text every format shares. Markdown marks the best value of
each metric column in bold, csv and json with a ``best`` field, LaTeX with ``\\textbf``.
"""

from __future__ import annotations

from mdtui.results.render.data import csv_pivots, csv_tables, json_pivots, json_tables, seeds_needed_json
from mdtui.results.render.latex import latex_pivots, latex_tables
from mdtui.results.render.md_tables import md_pivots, md_tables, seeds_needed_md
from mdtui.results.stats import SeedsNeeded
from mdtui.results.tables import GroupTable, PivotTable, Row

NOTHING = {"md": "No completed runs match.\n", "latex": "% no completed runs match\n"}


def render_tables(tables: list[GroupTable], fmt: str, *, agg: str) -> str:
    """The report's tables in ``fmt``: md, csv, json or latex."""
    if fmt == "json":
        return json_tables(tables, agg)
    if fmt == "csv":
        return csv_tables(tables)
    if not tables:
        return NOTHING.get(fmt, NOTHING["latex"])
    return latex_tables(tables, agg) if fmt == "latex" else md_tables(tables, agg)


def render_pivots(tables: list[PivotTable], fmt: str, *, agg: str) -> str:
    """The report's pivot grids in ``fmt``: md, csv, json or latex."""
    if fmt == "json":
        return json_pivots(tables, agg)
    if fmt == "csv":
        return csv_pivots(tables)
    if not tables:
        return NOTHING.get(fmt, NOTHING["latex"])
    return latex_pivots(tables) if fmt == "latex" else md_pivots(tables, agg)


def render_seeds_needed(
    tables: list[GroupTable], needed: list[list[tuple[Row, SeedsNeeded]]], fmt: str
) -> str:
    """``report --seeds-needed`` in ``fmt``: md or json."""
    return seeds_needed_json(tables, needed) if fmt == "json" else seeds_needed_md(tables, needed)
