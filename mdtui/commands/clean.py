"""``mdtui rm`` and ``mdtui gc``: give disk back (mdtui.runs.cleanup decides what may go)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from mdtui.commands.common import (
    console,
    load_plan_or_exit,
    open_store,
    plan_file,
    print_json,
    resolve_run_or_exit,
    usage_error,
)
from mdtui.execution.reconcile import reconcile
from mdtui.runs.cleanup import KEEP, free_checkpoints, needed_checkpoints, parse_age, plan_gc, remove_run
from mdtui.runs.disk import fmt_size, tree_size
from mdtui.runs.status import WAITING

if TYPE_CHECKING:
    from mdtui.runs.store import RunRecord, RunStore

RM_HELP = """Delete finished runs: their folders (checkpoints, logs, events) and their index rows.

Each RUN is a run id (or a unique part of one); an EXPERIMENT name means every run of it.
Live and queued runs are refused (stop or cancel them first); nothing is removed then.
RESULTS.md is the notebook and is not edited: a removed run's entry stays there."""


def _runs_of(store: RunStore, refs: list[str]) -> list[RunRecord]:
    chosen: dict[str, RunRecord] = {}
    for ref in refs:
        of_experiment = store.list_runs(experiment=ref)
        for rec in of_experiment or [resolve_run_or_exit(store, ref)]:
            chosen.setdefault(rec.run_id, rec)
    return list(chosen.values())


def _refuse_unfinished(runs: list[RunRecord]) -> None:
    busy = [r for r in runs if not r.finished]
    if not busy:
        return
    lines = []
    for r in busy:
        how = f"`mdtui queue cancel {r.run_id}`" if r.status in WAITING else f"`mdtui stop {r.run_id}`"
        lines.append(f"  {r.run_id} ({r.experiment}) is {r.status}: {how} first")
    usage_error("nothing removed; some runs are not finished:\n" + "\n".join(lines))


def rm_cmd(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., metavar="RUN|EXPERIMENT...", help="Runs or experiments."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would go; delete nothing."),
) -> None:
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    reconcile(store)  # a run whose supervisor died is lost (finished), not running
    runs = _runs_of(store, refs)
    _refuse_unfinished(runs)
    needed = needed_checkpoints(store, plan)
    total = 0
    for rec in runs:
        size = tree_size(rec.run_dir)
        total += size
        console.print(f"{rec.run_id}  {rec.experiment}  {rec.status}  {fmt_size(size)}", soft_wrap=True)
        why = needed.get(Path(rec.run_dir) / "checkpoints" / "best.pt")
        if why:
            console.print(
                f"  note: {why}; after this it starts from an older completed run, or waits for one",
                style="yellow",
                soft_wrap=True,
            )
    count = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    if dry_run:
        console.print(f"would remove {count}, {fmt_size(total)} (RESULTS.md keeps their entries)")
        return
    if not yes and not typer.confirm(f"Remove {count} ({fmt_size(total)})?", default=False):
        console.print("nothing removed")
        raise typer.Exit(1)
    freed = sum(remove_run(store, rec) for rec in runs)
    console.print(f"removed {count}, freed {fmt_size(freed)} (RESULTS.md keeps their entries)")


def gc_cmd(
    ctx: typer.Context,
    keep: str = typer.Option(
        "best", "--keep", help="Checkpoints to keep per finished run: best, last, both, none."
    ),
    older_than: str | None = typer.Option(
        None, "--older-than", metavar="AGE", help="Only runs that ended longer ago than AGE (14d, 12h, 2w)."
    ),
    resumable: bool = typer.Option(
        False,
        "--resumable",
        help="Also free last.pt of stopped/failed/lost runs (they can no longer resume).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would be freed, and the total."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Free checkpoints of finished runs; prints each file and the total.

    Never touches a checkpoint that an experiment's `from` resolves to (the upstream's latest completed
    run's best.pt), that a live or queued run started from, or a resume point (without --resumable)."""
    if keep not in KEEP:
        usage_error(f'--keep "{keep}": expected one of {", ".join(KEEP)}')
    try:
        age = parse_age(older_than) if older_than is not None else None
    except ValueError as exc:
        usage_error(f"--older-than {exc}")
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    reconcile(store)
    gc = plan_gc(store, plan, keep=keep, older_than=age, resumable=resumable, now=time.time())
    freed = gc.total if dry_run else free_checkpoints(gc.free)
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "freed_bytes": freed,
                "free": [{"run_id": c.run_id, "path": str(c.path), "bytes": c.size} for c in gc.free],
                "kept": [{"path": str(k.path), "why": k.why} for k in gc.kept],
            }
        )
        return
    verb = "would free" if dry_run else "freed"
    for item in gc.free:
        console.print(f"{verb} {fmt_size(item.size):>10}  {item.path}", soft_wrap=True, highlight=False)
    for item in gc.kept:
        console.print(Text(f"kept  {item.path}: {item.why}", style="dim"), soft_wrap=True)
    files = f"{len(gc.free)} checkpoint{'s' if len(gc.free) != 1 else ''}"
    console.print(Text.assemble((f"{verb} {fmt_size(freed)}", "bold"), f" in {files}"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("rm", help=RM_HELP)(rm_cmd)
    app.command("gc")(gc_cmd)
