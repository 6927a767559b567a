"""Report tables as LaTeX (booktabs ``table`` floats; the best values in ``\\textbf``)."""

from __future__ import annotations

from mdtui.results.render.cells import delta_text, n_header, paper_text, stat_text, value_text
from mdtui.results.tables import GroupTable, PivotTable, Stat

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


def latex_table(table: GroupTable, agg: str) -> str:
    header = ["experiment", *map(latex_escape, table.knob_keys), *table.metrics, n_header(agg)]
    if table.baseline:
        header.append(f"$\\Delta$ {table.headline}")
    body = []
    for row in table.rows:
        name = latex_escape(row.experiment) + (" (baseline)" if row.is_baseline else "")
        cells = [name + (" \\textbf{leaky}" if row.leaky else "")]
        cells += [latex_escape(value_text(row.values.get(k))) for k in table.knob_keys]
        cells += [
            _latex_stat(row.stats[m], m in row.best) + latex_escape(paper_text(row, m)) for m in table.metrics
        ]
        cells.append(str(max(s.n for s in row.stats.values())))
        if table.baseline:
            cells.append(latex_escape(delta_text(row)))
        body.append(cells)
    spec = "l" + "l" * len(table.knob_keys) + "r" * (len(header) - 1 - len(table.knob_keys))
    return _latex_block(table.group, spec, header, body)


def latex_pivot(table: PivotTable) -> str:
    header = [f"{latex_escape(table.row_key)} / {latex_escape(table.col_key)}"]
    header += [latex_escape(value_text(c)) for c in table.col_values]
    body = [
        [latex_escape(value_text(value))]
        + [_latex_stat(table.cells.get((i, j)), (i, j) in table.best) for j in range(len(table.col_values))]
        for i, value in enumerate(table.row_values)
    ]
    caption = f"{table.group}: {table.metric} by {table.row_key} × {table.col_key}"
    return _latex_block(caption, "l" + "r" * len(table.col_values), header, body)


def latex_tables(tables: list[GroupTable], agg: str) -> str:
    return "\n\n".join(latex_table(t, agg) for t in tables) + "\n"


def latex_pivots(tables: list[PivotTable]) -> str:
    return "\n\n".join(latex_pivot(t) for t in tables) + "\n"
