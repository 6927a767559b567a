"""Result verbs: ``mdtui report``, ``mdtui note``, ``mdtui plot``, ``mdtui compare``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mdtui.commands.common import (
    console,
    fail,
    load_plan_or_exit,
    open_store,
    plan_file,
    print_json,
    resolve_run_or_exit,
    usage_error,
)
from mdtui.system import terminal
from mdtui.system.text import escape_control

if TYPE_CHECKING:
    from mdtui.registry.plan import Plan
    from mdtui.runs.store import RunStore


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
    app.command("note")(note_command)
    app.command("plot")(plot_command)
    app.command("compare")(compare_command)


def report_command(
    ctx: typer.Context,
    selectors: list[str] = typer.Argument(
        None, metavar="[GROUP|EXPERIMENT]...", help="Groups, tables or experiments (default: all)."
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        help="table | md | csv | json | latex (default: table on a terminal, md when piped or with -o)",
    ),
    metric: str = typer.Option(
        "acc1", "--metric", help="acc1 | err1 | acc5 | many | medium | few | last_acc1"
    ),
    agg: str = typer.Option("mean", "--agg", help="How runs (seeds) combine: mean (± std) | best | last"),
    pivot: tuple[str, str] | None = typer.Option(
        None,
        "--pivot",
        metavar="ROW_KEY COL_KEY",
        help="A grid of --metric, e.g. --pivot loss.name loss.threshold",
    ),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Show the Δ-to-baseline column."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
    seeds_needed: bool = typer.Option(
        False,
        "--seeds-needed",
        help="Per experiment: seeds that would separate it from the baseline at the observed spread.",
    ),
) -> None:
    """Result tables from the run index: one per group, seeds as mean ± std, best value in bold.

    Δ to the baseline comes with its 95% Welch interval over seeds; "within noise" when the interval
    spans 0, "1 seed" when either side has a single run."""
    from mdtui.results.report import ReportError, render_report, render_seeds_needed

    if fmt is None:
        fmt = "table" if output is None and terminal.stdout_is_terminal() else "md"
    if fmt == "table" and output is not None:
        usage_error("--format table is for the terminal; write md, csv, json or latex to a file")
    if seeds_needed and (pivot is not None or agg != "mean" or not baseline):
        usage_error(
            "--seeds-needed compares seed means to the baseline: drop --pivot, --agg and --no-baseline"
        )
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    options = {"fmt": fmt, "metric": metric, "agg": agg, "pivot": pivot, "baseline": baseline}
    try:
        if seeds_needed:
            # the terminal gets the markdown as it is: five narrow columns fit any width
            text = render_seeds_needed(
                store, plan, selectors or [], fmt="md" if fmt == "table" else fmt, metric=metric
            )
        elif fmt == "table":
            _print_terminal_report(store, plan, selectors or [], **options)
            return
        else:
            text = render_report(store, plan, selectors or [], **options)
    except ReportError as exc:
        usage_error(str(exc))
    if output is not None:
        from mdtui.system.fs import atomic_write_text

        atomic_write_text(output, text)
        console.print(f"wrote {output}")
        return
    # Plain write: Rich would wrap long table lines (and markdown stays byte-exact for pipes). Only a
    # terminal gets control characters in names escaped: it would obey them.
    if terminal.stdout_is_terminal():
        text = escape_control(text, multiline=True)
    sys.stdout.write(text)
    sys.stdout.flush()


def _print_terminal_report(
    store: RunStore,
    plan: Plan,
    selectors: list[str],
    *,
    pivot: tuple[str, str] | None,
    metric: str,
    agg: str,
    baseline: bool,
    **_: object,
) -> None:
    """The report as Rich tables fitted to the terminal's width (``--format table``)."""
    from mdtui.results.render.terminal import terminal_pivots, terminal_tables
    from mdtui.results.report import build_pivots, build_tables

    width = console.width
    if pivot is not None:
        pivots = build_pivots(store, plan, selectors, pivot, metric=metric, agg=agg, baseline=baseline)
        blocks = terminal_pivots(pivots, agg=agg, width=width)
    else:
        tables = build_tables(store, plan, selectors, metric=metric, agg=agg, baseline=baseline)
        blocks = terminal_tables(tables, agg=agg, width=width)
    for i, block in enumerate(blocks):
        if i:
            console.print()
        console.print(block, crop=False)


def note_command(
    ctx: typer.Context,
    run: str = typer.Argument(..., metavar="RUN", help="Run id (or a unique part of it) or experiment name."),
    text: str = typer.Argument(..., help='The note, e.g. "server died at epoch 165".'),
) -> None:
    """Attach a note to a run; it appears in RESULTS.md and in reports."""
    from mdtui.results.log import attach_note

    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    rec = resolve_run_or_exit(store, run)
    outcome = attach_note(store, rec.run_id, text)
    where = {
        "updated": "its RESULTS.md entry was updated",
        "appended": "its RESULTS.md entry was edited by hand, so a note line was added below it",
        "stored": "it will appear in RESULTS.md when the run finishes",
    }[outcome]
    console.print(f"note saved on {rec.run_id} ({rec.experiment}); {where}")


def plot_command(
    ctx: typer.Context,
    runs: list[str] = typer.Argument(..., metavar="RUN...", help="Runs to overlay."),
    output: Path | None = typer.Option(None, "--output", "-o", help="PNG file (default: plot-<metric>.png)."),
    metric: str = typer.Option("eval.acc1", "--metric", help="eval.acc1 | eval.loss | train.loss | lr | ..."),
) -> None:
    """Overlay one metric of several runs in one PNG."""
    from mdtui.results.log import load_state
    from mdtui.results.plots import metric_series, plot_overlay

    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    series = []
    for ref in runs:
        rec = resolve_run_or_exit(store, ref)
        state, _ = load_state(rec.run_dir)
        try:
            series.append(metric_series(state, metric, label=f"{rec.experiment} · {rec.run_id}"))
        except KeyError as exc:
            usage_error(str(exc.args[0]))
    if not any(s.xs for s in series):
        fail(f"none of the runs has recorded {metric} for an epoch yet")
    target = output or Path(f"plot-{metric.replace('.', '-')}.png")
    plot_overlay(series, target, metric)
    console.print(f"wrote {target}")


def compare_command(
    ctx: typer.Context,
    runs: list[str] = typer.Argument(..., metavar="RUN RUN...", help="Two or more runs."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Config keys that differ between runs, and metric deltas against the first run."""
    from rich.table import Table
    from rich.text import Text

    from mdtui.results.compare import compare_runs, comparison_rows, format_config_value

    if len(runs) < 2:
        usage_error("compare needs at least two runs, e.g. `mdtui compare r32-ce r32-refl`")
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    records = [resolve_run_or_exit(store, ref) for ref in runs]
    comparison = compare_runs(records)
    if as_json:
        print_json(
            {
                "runs": [
                    {"run_id": r, "experiment": e}
                    for r, e in zip(comparison.run_ids, comparison.experiments, strict=True)
                ],
                "config": {
                    k: [format_config_value(v) for v in values] for k, values in comparison.config_rows
                },
                "metrics": {m.name: {"values": m.values, "deltas": m.deltas} for m in comparison.metric_rows},
            }
        )
        return
    header, rows = comparison_rows(comparison)
    table = Table(show_lines=False)
    for title in header:
        table.add_column(Text(title), overflow="fold")
    split = len(comparison.config_rows)
    for i, row in enumerate(rows):
        table.add_row(*(Text(cell) for cell in row), end_section=i == split - 1)
    if not comparison.config_rows:
        console.print("The configs are identical (apart from run ids).")
    console.print(table)
