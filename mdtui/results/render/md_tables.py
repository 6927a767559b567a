"""Report tables as GitHub-flavoured markdown: the best value of each metric column in bold."""

from __future__ import annotations

from mdtui.results.markdown import md_code, md_escape
from mdtui.results.render import cells as shared  # the text every format shares
from mdtui.results.stats import SeedsNeeded
from mdtui.results.tables import GroupTable, PivotTable, Row


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def md_cell_code(text: str) -> str:
    # In a GFM table a pipe splits the cell even inside a code span.
    return md_code(text).replace("|", "\\|")


def _md_experiment(row: Row) -> str:
    text = md_cell_code(row.experiment)
    if row.is_baseline:
        text += " (baseline)"
    return text + (" **leaky**" if row.leaky else "")


def md_table(table: GroupTable, agg: str) -> list[str]:
    header = ["experiment", *(md_cell_code(k) for k in table.knob_keys), *table.metrics, shared.n_header(agg)]
    align = ["---", *(":---" for _ in table.knob_keys), *("---:" for _ in table.metrics), "---:"]
    if table.baseline:
        header.append(f"Δ {table.headline}")
        align.append("---:")
    notes = shared.has_notes(table)
    if notes:
        header.append("note")
        align.append("---")
    lines = [md_row(header), md_row(align)]
    for row in table.rows:
        cells = [
            _md_experiment(row),
            *(md_escape(shared.value_text(row.values.get(k))) for k in table.knob_keys),
        ]
        for metric in table.metrics:
            text = shared.stat_text(row.stats[metric])
            text = f"**{text}**" if metric in row.best else text
            cells.append(text + shared.paper_text(row, metric))
        cells.append(str(max(s.n for s in row.stats.values())))
        if table.baseline:
            cells.append(shared.delta_text(row))
        if notes:
            cells.append(md_escape("; ".join(row.notes)))
        lines.append(md_row(cells))
    return lines


def md_pivot(table: PivotTable) -> list[str]:
    corner = f"{md_cell_code(table.row_key)} \\\\ {md_cell_code(table.col_key)}"
    lines = [
        md_row([corner, *(md_escape(shared.value_text(c)) for c in table.col_values)]),
        md_row([":---", *("---:" for _ in table.col_values)]),
    ]
    for i, value in enumerate(table.row_values):
        cells = [md_escape(shared.value_text(value))]
        for j in range(len(table.col_values)):
            stat = table.cells.get((i, j))
            text = shared.stat_text(stat) if stat is not None else ""
            if stat is not None and (i, j) in table.best:
                text = f"**{text}**"
            cells.append(text)
        lines.append(md_row(cells))
    return lines


def md_escape_caption(text: str) -> str:
    return text.replace("|", "\\|")


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
                md_row(
                    ["experiment", h, f"Δ {h} vs {md_cell_code(table.baseline)}", "seeds", "seeds needed"]
                ),
                md_row(["---", "---:", "---:", "---:", "---"]),
            ]
            for row, answer in rows:
                seeds = f"{row.stats[h].n} vs {table.baseline_seeds.n}"
                cells = [
                    md_cell_code(row.experiment),
                    shared.stat_text(row.stats[h]),
                    shared.delta_text(row),
                    seeds,
                ]
                lines.append(md_row([*cells, md_escape(answer.text())]))
            lines += [
                "",
                f"seeds per experiment for the 95% interval of Δ {h} to exclude 0,"
                " at the pooled spread and the Δ seen so far",
            ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def md_tables(tables: list[GroupTable], agg: str) -> str:
    blocks = [
        "\n".join([f"## {md_escape(t.group)}", "", *md_table(t, agg), "", shared.table_caption(t, agg)])
        for t in tables
    ]
    return "\n\n".join(blocks) + "\n"


def md_pivots(tables: list[PivotTable], agg: str) -> str:
    blocks = []
    for table in tables:
        caption = f"{table.metric} by {table.row_key} × {table.col_key}, {shared.agg_words(agg)}"
        if table.baseline_stat is not None:
            caption += f"; baseline {md_code(table.baseline or '')}: {shared.stat_text(table.baseline_stat)}"
        blocks.append(
            "\n".join([f"## {md_escape(table.group)}", "", *md_pivot(table), "", md_escape_caption(caption)])
        )
    return "\n\n".join(blocks) + "\n"
