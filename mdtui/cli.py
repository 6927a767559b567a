"""The ``mdtui`` command line: the Typer ``app``, the global ``--file`` option and the foundation verbs.

Verb groups of other areas live in ``mdtui/commands/<area>.py`` and are attached by ``register(app)``.
Heavy or optional parts (the TUI, torch-free but large modules) are imported only when used.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from mdtui import actions
from mdtui.commands.common import (
    EXIT_FAILED,
    console,
    err_console,
    fail,
    fmt_duration,
    fmt_pct,
    load_plan_or_exit,
    open_store,
    plan_file,
    print_json,
    resolve_run_or_exit,
)
from mdtui.execution import ranks, slurm_status
from mdtui.execution.backends import launcher_of
from mdtui.execution.launching import StopDeferred, StopTarget
from mdtui.execution.reconcile import reconcile
from mdtui.runs.rundir import RunOutput
from mdtui.runs.status import FINISHED, LIVE, WAITING, RunStatus
from mdtui.runs.status_style import status_style
from mdtui.scheduling.scheduler import QueueError
from mdtui.system.terminal import Cell, Column, print_table

app = typer.Typer(
    name="mdtui",
    help="Keyboard-driven experiment manager for CNN-classifier research. Bare `mdtui` opens the TUI.",
    add_completion=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Verb modules of other areas; a module that does not exist yet is skipped, any other import error shows.
COMMAND_MODULES = ("run", "queue", "results", "doctor", "clean", "export", "service", "data")


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    file: Path | None = typer.Option(
        None,
        "--file",
        "-f",
        help="experiments.toml to use (default: $MDTUI_EXPERIMENTS or ./experiments.toml).",
    ),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    ctx.obj = {"file": file}
    if version:
        from mdtui import __version__

        console.print(f"mdtui {__version__}")
        raise typer.Exit(0)
    # Any mdtui command restarts a scheduler that was killed while runs were queued (it never raises).
    from mdtui.scheduling.scheduler import ensure_scheduler_for

    ensure_scheduler_for(file)
    if ctx.invoked_subcommand is None:
        open_tui(file)


def open_tui(file: Path | None) -> None:
    try:
        tui = importlib.import_module("mdtui.tui.app")
    except ModuleNotFoundError as exc:
        if exc.name not in ("mdtui.tui", "mdtui.tui.app"):
            raise
        console.print("The mdtui TUI is not installed yet; use the CLI verbs meanwhile (`mdtui --help`).")
        raise typer.Exit(0) from None
    code = tui.run_app(file)
    if code:
        raise typer.Exit(code)  # a crash of the app is not a success for the shell


# --------------------------------------------------------------------------- validate / list


@app.command("validate")
def validate_cmd(
    ctx: typer.Context,
    file: Path | None = typer.Argument(
        None, help="experiments.toml to check (default: --file or ./experiments.toml)."
    ),
    data: bool = typer.Option(False, "--data", help="Also check every experiment's dataset is in place."),
) -> None:
    """Check experiments.toml; every problem names its file, line, experiment and key."""
    plan = load_plan_or_exit(file or plan_file(ctx))
    groups = {e.group for e in plan.experiments.values()}
    console.print(
        Text.assemble(
            ("ok", "green"),
            f" {plan.settings.path}: {len(plan.experiments)} experiments in {len(groups)} groups",
        ),
        soft_wrap=True,
    )
    from mdtui.registry.slurm_options import time_limit_warnings

    # valid, but a run would stop before it trains (the file stays ok: exit 0)
    exps = ((e.name, e.slurm) for e in plan.experiments.values())
    for warning in time_limit_warnings(plan.settings.slurm, exps):
        console.print(Text.assemble(("warning", "yellow"), f" {warning}"), soft_wrap=True)
    if data:  # the pre-flight of `mdtui run` for every experiment (missing data: exit 1)
        from mdtui.commands.data import report_missing_data

        if report_missing_data(plan):
            raise typer.Exit(EXIT_FAILED)


def _block_name(config: dict[str, Any], key: str) -> str:
    block = config.get(key)
    if isinstance(block, dict):
        return str(block.get("name", "-"))
    return str(block) if block else "-"


def experiment_row(exp: Any, latest: Any) -> dict[str, Any]:
    cfg = exp.config
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    return {
        "name": exp.name,
        "group": exp.group,
        "baseline": exp.baseline,
        "model": _block_name(cfg, "model"),
        "data": _block_name(cfg, "data"),
        "imbalance_ratio": data.get("imbalance_ratio"),
        "loss": _block_name(cfg, "loss"),
        "epochs": cfg.get("epochs"),
        "from": exp.upstream,
        "seeds": list(exp.seeds),
        "sweep": exp.sweep_point,
        "tags": list(exp.tags),
        "doctor": bool(cfg.get("doctor")),
        "kernels": bool(cfg.get("kernels")),
        "latest_run": None
        if latest is None
        else {"run_id": latest.run_id, "status": latest.status, "best_acc1": latest.best_acc1},
    }


@app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Experiments (sweeps expanded) with their key settings and their latest run."""
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    reconcile(store)
    latest = store.latest_runs()
    rows = [experiment_row(e, latest.get(e.name)) for e in plan.experiments.values()]
    if as_json:
        print_json(rows)
        return
    print_experiment_list(rows)


# How `mdtui list` gives way on a narrow terminal: names are cut in the middle (the sweep suffix
# stays), model/data/loss/epochs are never cut but dropped, the least useful first. Piped: all whole.
LIST_COLUMNS = (
    Column("experiment", cut="middle", min_width=16, grow=1),
    Column("group", cut="end", min_width=10, drop=6),
    Column("model", cut="none", drop=2),
    Column("data", cut="none", drop=4),
    Column("loss", cut="none", drop=3),
    Column("epochs", cut="none", drop=1, justify="right"),
    Column("from", cut="middle", min_width=12, drop=5),
    Column("last run", cut="none"),
    Column("best acc1", cut="none", justify="right"),
)


def list_cells(row: dict[str, Any]) -> list[Cell]:
    """One ``mdtui list`` row's cells, in LIST_COLUMNS order (values whole; the table fits them)."""
    ratio = row["imbalance_ratio"]
    data = row["data"] + (f" ρ={ratio:g}" if isinstance(ratio, (int, float)) and ratio != 1 else "")
    run = row["latest_run"] or {}
    status = run.get("status", "")
    return [
        row["name"] + (" *" if row["baseline"] else ""),
        row["group"],
        row["model"],
        data,
        row["loss"],
        str(row["epochs"] or "-"),
        row["from"] or "",
        Text(status, style=status_style(status)),
        fmt_pct(run.get("best_acc1")) if run else "",
    ]


def print_experiment_list(rows: list[dict[str, Any]]) -> None:
    layout = print_table(console, LIST_COLUMNS, [list_cells(row) for row in rows])
    note = "* baseline of its group"
    if layout is not None and layout.dropped:
        note += (
            f"; not shown at {console.width} columns: {', '.join(layout.dropped)}"
            " (`mdtui list | cat` prints every column in full)"
        )
    console.print(note, style="dim", soft_wrap=True)


# --------------------------------------------------------------------------- status / stop / logs


def _elapsed(rec: Any) -> float | None:
    if rec.started_t is None:
        return None
    return (rec.ended_t or time.time()) - rec.started_t


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    show_all: bool = typer.Option(False, "--all", "-a", help="Every run, not only live and recent ones."),
    limit: int = typer.Option(15, "--limit", "-n", help="Finished runs to show (without --all)."),
) -> None:
    """Live runs and the latest finished ones (dead supervisors are reconciled first)."""
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    reconcile(store)
    if show_all:
        runs = store.list_runs()
    else:  # the index picks them: a lab's 10,000 finished runs are never loaded to show 15
        runs = store.list_runs(statuses=set(RunStatus) - FINISHED)
        runs += store.list_runs(statuses=FINISHED, limit=max(0, limit)) if limit > 0 else []
    if as_json:
        print_json([r.to_json() for r in runs])
        return
    if not runs:
        console.print(f"no runs in {store.runs_dir} yet; start one with `mdtui run NAME`")
        return
    print_run_table(runs, sizes=show_all)
    _say_paused_queue(store, runs)
    outage = slurm_status.outage(runs)
    if outage:
        console.print(
            f"{outage}: the Slurm runs above show their last known state", style="yellow", soft_wrap=True
        )


def _say_paused_queue(store: Any, runs: list[Any]) -> None:
    """Queued runs of a paused queue wait forever: say so, and how to go on."""
    from mdtui.runs.status import WAITING
    from mdtui.scheduling import scheduler

    waiting = sum(1 for r in runs if r.status in WAITING)
    if waiting and scheduler.is_paused(store):
        console.print(
            f"the queue is paused: {waiting} queued run{'s wait' if waiting != 1 else ' waits'} until "
            "`mdtui queue resume`",
            style="yellow",
            soft_wrap=True,
        )


STATUS_COLUMNS = (
    Column("run", cut="middle", min_width=10, grow=1),
    Column("experiment", cut="middle", min_width=16, grow=2),
    Column("status", cut="none"),
    Column("devices", cut="none", drop=2),
    Column("epochs", cut="none", justify="right", drop=3),
    Column("best acc1", cut="none", justify="right"),
    Column("time", cut="none", justify="right", drop=4),
    Column("note", cut="end", min_width=12, drop=5),
)
SIZE_COLUMN = Column("size", cut="none", justify="right", drop=6)  # `status --all`: disk per run


def print_run_table(runs: list[Any], *, sizes: bool = False) -> None:
    """``mdtui status``'s table: fitted to a terminal (run ids keep their distinguishing end), whole when piped.
    ``sizes``: a column with each run folder's size on disk (``mdtui gc`` frees checkpoints)."""
    from mdtui.runs.disk import fmt_size, tree_size

    rows: list[list[Cell]] = []
    for r in runs:
        epochs = f"{r.epochs_done}/{r.total_epochs}" if r.total_epochs else str(r.epochs_done or "-")
        # the reason whenever there is one: also a stopped run's "time limit", a queued run's
        # "requeued by Slurm; waiting for ..."
        note = r.error if r.error and r.status != RunStatus.COMPLETED else r.note
        if r.slurm_line:  # a Slurm run: its job and what Slurm last said of it
            note = f"{r.slurm_line}; {note}" if note else r.slurm_line
        rows.append(
            [
                r.run_id,
                r.experiment,
                Text(r.status, style=status_style(r.status)),
                ranks.devices_label(r.devices, ranks.run_process_count(r.run_dir, r.devices)),
                epochs,
                fmt_pct(r.best_acc1),
                fmt_duration(_elapsed(r)),
                " ".join((note or "").split()),  # one line per run
                *([fmt_size(tree_size(r.run_dir))] if sizes else []),
            ]
        )
    layout = print_table(console, (*STATUS_COLUMNS, *([SIZE_COLUMN] if sizes else [])), rows)
    if layout is not None and layout.dropped:
        console.print(
            f"not shown at {console.width} columns: {', '.join(layout.dropped)} (`mdtui status --json` has all)",
            style="dim",
            soft_wrap=True,
        )


@app.command("stop")
def stop_cmd(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run id (or unique part of it) or experiment name (latest run)."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the run has stopped."),
    grace: float | None = typer.Option(None, "--grace", help="Seconds before SIGKILL (default: settings)."),
) -> None:
    """Stop a run cleanly: SIGTERM (the engine saves last.pt), SIGKILL after the grace period."""
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    reconcile(store)
    rec = resolve_run_or_exit(store, run)
    launcher = launcher_of(store, rec, plan)
    if rec.status in WAITING and not launcher.queues_itself:
        # waiting in mdtui's own queue: nothing runs yet, stopping it cancels it (as the TUI's stop)
        try:
            outcome = actions.cancel(store, plan, rec.run_id)
        except QueueError:
            fail(f"run {rec.run_id} ({rec.experiment}) is {rec.status} but not in mdtui's queue")
        console.print(f"run {rec.run_id} ({rec.experiment}): {outcome} (it was waiting in mdtui's queue)")
        return
    target = launcher.stop_target(rec)  # None: nothing to stop
    orphan = target == StopTarget.ORPHAN  # its supervisor died; the engine trains on
    if target is None:
        fail(f"run {rec.run_id} ({rec.experiment}) is not running (status: {rec.status})")
    seconds = launcher.grace if grace is None else grace
    if orphan:
        console.print(
            f"run {rec.run_id} is {rec.status} but its engine (pid {rec.pid}) still runs: "
            f"stopping it (SIGKILL after {seconds:g}s)"
        )
    try:
        sent = launcher.stop(rec.run_id, grace=seconds, wait=wait)
    except StopDeferred as deferred:
        fail(str(deferred))  # exit 1: recorded, but nothing is cancelled yet
    if not sent:
        reconcile(store)
        fail(f"run {rec.run_id} has no live process to signal; it is now {store.get(rec.run_id).status}")
    if wait or orphan:
        reconcile(store)  # an orphan's engine has just ended: take its own ending if it wrote one
        final = store.get(rec.run_id) or rec
        console.print(f"run {rec.run_id} ({rec.experiment}): {final.status}")
    elif target == StopTarget.PENDING:
        console.print(f"cancelled run {rec.run_id} ({rec.experiment}) while its job waited in Slurm's queue")
    else:
        console.print(
            f"stopping run {rec.run_id} ({rec.experiment}); it saves last.pt and ends within {seconds:g}s"
        )


def format_log_line(line: str) -> str | None:
    """A human line for one stdout line: events rendered, step events skipped, text kept."""
    from engine.schema.events import TextLine, UnknownEvent, parse_line

    parsed = parse_line(line)
    if parsed is None:
        return None
    if isinstance(parsed, TextLine):
        return parsed.text
    if isinstance(parsed, UnknownEvent):
        return line.rstrip("\n")
    kind = parsed.get("type")
    if kind == "step":
        return None
    if kind == "run_started":
        return f"run started: {parsed.get('total_epochs')} epochs on {parsed.get('device')}"
    if kind == "epoch":
        train, ev = parsed.get("train") or {}, parsed.get("eval") or {}
        parts = [f"epoch {int(parsed.get('epoch', 0)) + 1}"]
        if train.get("loss") is not None:
            parts.append(f"loss {train['loss']:.4f}")
        if ev.get("acc1") is not None:
            parts.append(f"acc1 {ev['acc1']:.2f}%")
        if parsed.get("best_acc1") is not None:
            parts.append(f"best {parsed['best_acc1']:.2f}%")
        if parsed.get("lr") is not None:
            parts.append(f"lr {parsed['lr']:.4g}")
        if parsed.get("seconds") is not None:
            parts.append(f"{parsed['seconds']:.1f}s")
        return "  ".join(parts)
    if kind == "checkpoint":
        return f"checkpoint {parsed.get('path')} (epoch {int(parsed.get('epoch', 0)) + 1})"
    if kind == "artifact":
        return f"artifact {parsed.get('kind')}: {parsed.get('path')}"
    if kind == "log":
        return f"[{parsed.get('level', 'info')}] {parsed.get('msg', '')}"
    if kind == "run_finished":
        summary = parsed.get("summary") or {}
        text = f"run finished: {parsed.get('status')}"
        if summary.get("best_acc1") is not None:
            text += f"  best acc1 {summary['best_acc1']:.2f}%"
        if parsed.get("error"):
            text += f"  error: {parsed['error']}"
        return text
    return None


@app.command("logs")
def logs_cmd(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run id (or unique part of it) or experiment name (latest run)."),
    follow: bool = typer.Option(False, "--follow", "-F", help="Keep printing new output until the run ends."),
    stderr: bool = typer.Option(False, "--stderr", help="Show stderr.log instead of stdout.log."),
    raw: bool = typer.Option(False, "--raw", help="Print lines as written (events as JSON)."),
) -> None:
    """Print a run's output (events rendered as text); --follow tails it live."""
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    rec = _run_with_output(store, resolve_run_or_exit(store, run), run)
    output = RunOutput(rec.run_dir, "stderr" if stderr else "stdout")
    if not output.path.exists() and not (follow and rec.status in LIVE | WAITING):
        never = rec.status in (RunStatus.CANCELLED, RunStatus.CREATED, *WAITING) and not rec.started_t
        why = "it never started" if never else f"no {output.path.name} was written"
        console.print(f"run {rec.run_id} ({rec.experiment}, {rec.status}) has no output: {why}", style="dim")
        return
    try:
        while True:
            got_lines = False
            for text in output.new_lines():
                got_lines = True
                shown = text if raw else format_log_line(text)
                if shown is not None:
                    console.print(shown, markup=False, highlight=False, soft_wrap=True)
            if not follow:
                break
            if not got_lines:
                reconcile(store)
                current = store.get(rec.run_id)
                if current is None or not current.live:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    text = output.rest()
    if text and not follow:
        shown = text if raw else format_log_line(text)
        if shown is not None:
            console.print(shown, markup=False, highlight=False, soft_wrap=True)


def _run_with_output(store: Any, rec: Any, ref: str) -> Any:
    """For an experiment name, its latest run that started: a cancelled or queued entry that never ran
    must not hide the earlier run that has a full log (a run id asks for that run, whatever it is)."""
    if ref != rec.experiment or rec.started_t:
        return rec
    started = next((r for r in store.list_runs(experiment=rec.experiment) if r.started_t), None)
    if started is None:
        return rec
    console.print(
        f"(the latest run of {rec.experiment}, {rec.run_id}, is {rec.status} and never started;"
        f" showing {started.run_id})",
        style="dim",
        soft_wrap=True,
    )
    return started


@app.command("reindex")
def reindex_cmd(ctx: typer.Context) -> None:
    """Rebuild the runs index (runs/mdtui.db) from the run directories."""
    plan = load_plan_or_exit(plan_file(ctx))
    store = open_store(plan)
    count = store.reindex()
    changed = reconcile(store)
    console.print(
        f"indexed {count} runs from {store.runs_dir}" + (f"; {len(changed)} reconciled" if changed else "")
    )


# --------------------------------------------------------------------------- assembly


def register_commands(target: typer.Typer) -> None:
    for area in COMMAND_MODULES:
        name = f"mdtui.commands.{area}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that area is not built yet
            raise
        module.register(target)


register_commands(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(EXIT_FAILED) from None
