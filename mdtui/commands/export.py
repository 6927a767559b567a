"""``mdtui export``: runs' curves as TensorBoard event files or CSV per metric (mdtui.results.export)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mdtui.commands.common import (
    console,
    fail,
    load_plan_or_exit,
    open_store,
    plan_file,
    resolve_run_or_exit,
    usage_error,
)
from mdtui.results.export import FORMATS, TensorBoardMissing, export_runs, require_tensorboard

if TYPE_CHECKING:
    from mdtui.registry.plan import Plan
    from mdtui.runs.store import RunRecord, RunStore


def select_runs(plan: Plan, store: RunStore, refs: list[str]) -> list[RunRecord]:
    """Every run of a group or an experiment named in ``refs``, or the run a run id names (oldest first)."""
    chosen: dict[str, RunRecord] = {}
    for ref in refs:
        names = [e.name for e in plan.group(ref)] if ref in plan.groups() else []
        found = [r for name in names for r in store.list_runs(experiment=name)]
        found = found or store.list_runs(experiment=ref) or [resolve_run_or_exit(store, ref)]
        for rec in found:
            chosen.setdefault(rec.run_id, rec)
    return sorted(chosen.values(), key=lambda r: (r.created_t, r.run_id))


def export_cmd(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., metavar="RUN|EXPERIMENT|GROUP...", help="What to export."),
    out: Path = typer.Argument(..., metavar="DIR", help="Directory to write into (created)."),
    fmt: str = typer.Option("tensorboard", "--format", help="tensorboard (event files) or csv (per metric)."),
) -> None:
    """Export runs' curves: TensorBoard event files (scalars per epoch and step, hyper-parameters,
    per-class accuracy), or one CSV per metric plus summary.json.

    TensorBoard: `tensorboard --logdir DIR`; it needs `pip install 'mdtui\\[tensorboard]'`."""
    if fmt not in FORMATS:
        usage_error(f'--format "{fmt}": expected one of {", ".join(FORMATS)}')
    if out.exists() and not out.is_dir():
        usage_error(f"{out} exists and is not a directory; give a directory to write into")
    if fmt == "tensorboard":
        try:
            require_tensorboard()
        except TensorBoardMissing as exc:
            usage_error(str(exc))
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    runs = select_runs(plan, store, refs)
    try:
        written = export_runs(runs, out, fmt)
    except TensorBoardMissing as exc:
        usage_error(str(exc))
    except OSError as exc:
        fail(f"cannot write into {out}: {exc.strerror or exc}")
    what = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    if fmt == "tensorboard":
        console.print(
            f"exported {what} to {out} (TensorBoard); view with: tensorboard --logdir {out}", soft_wrap=True
        )
    else:
        console.print(
            f"exported {what} to {out}: {len(written) - 1} CSV files and summary.json", soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
