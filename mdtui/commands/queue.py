"""``mdtui queue ...`` and ``mdtui gpus``: the CLI face of the scheduler (docs/queue.md).

Every verb here calls ``ensure_scheduler`` on its way out, so a scheduler that was killed (or a queue
left with work after a reboot) is restarted by the next command that looks at the queue.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from mdtui import actions
from mdtui.commands.common import (
    console,
    err_console,
    fail,
    load_plan_or_exit,
    open_store,
    plan_file,
    print_json,
    usage_error,
)
from mdtui.commands.run import launcher_or_exit, or_exit, parse_devices, print_launched
from mdtui.execution import ledger, slurm_status
from mdtui.execution.backends import LAUNCHER_HELP, backend_for
from mdtui.execution.launching import LaunchRefused
from mdtui.registry.plan import Plan, default_path
from mdtui.runs.prepare import RunSetupError
from mdtui.scheduling.scheduler import (
    QueueError,
    ensure_scheduler,
    is_paused,
    move,
    pause,
    queue_entries,
    reservations,
    resume_and_start,
    scheduler_running,
)
from mdtui.system import gpus, slurm
from mdtui.system.processes import LOGOUT_WARNING, logout_kills_processes
from mdtui.system.terminal import Cell, Column, print_table

if TYPE_CHECKING:
    from mdtui.runs.store import RunRecord, RunStore

queue_app = typer.Typer(
    help="The run queue: runs start when their devices are free and their upstreams have completed.",
    no_args_is_help=False,
)


def _open(ctx: typer.Context) -> tuple[Plan, RunStore]:
    plan = load_plan_or_exit(plan_file(ctx))
    return plan, open_store(plan)


def _ensure(plan: Plan, store: RunStore) -> int | None:
    return ensure_scheduler(store.runs_dir, plan.settings.path)


def _parse_devices(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    return parse_devices(spec)


# --------------------------------------------------------------------------------------- listing


@queue_app.callback(invoke_without_command=True)
def queue_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the queue: waiting runs in order, then runs it launched that are still alive."""
    if ctx.invoked_subcommand is not None:
        return
    plan, store = _open(ctx)
    _ensure(plan, store)
    entries = queue_entries(store)
    paused = is_paused(store)
    running = scheduler_running(store.runs_dir)
    # runs a backend that queues itself holds (Slurm jobs, as of the last poll): not in mdtui's queue,
    # but waiting or running all the same
    held = slurm_status.slurm_runs(store)
    if as_json:
        print_json(
            {
                "paused": paused,
                "scheduler": running,
                "entries": [e.to_json() for e in entries],
                "slurm": [r.to_json() for r in held],
            }
        )
        return
    state = ("paused", "yellow") if paused else "active"
    scheduler = "running" if running else "idle"
    count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    console.print(Text.assemble("queue ", state, f"; scheduler {scheduler}; {count}"))
    if held:
        _print_held(held)
    if not entries:
        if not held:
            console.print("nothing queued (add runs with `mdtui queue add NAME...`)")
        return
    rows: list[list[Cell]] = []
    for e in entries:
        wanted = ",".join(e.devices) if e.devices else f"{e.gpus} any"
        devices = ",".join(e.assigned) if e.assigned else wanted
        rows.append([str(e.position or "-"), e.run_id, e.experiment, e.status, devices, e.reason or ""])
    # fitted to a terminal, whole when piped (`mdtui queue | cat`), as `mdtui status` and `list` are
    print_table(console, QUEUE_COLUMNS, rows)


QUEUE_COLUMNS = (
    Column("pos", cut="none"),
    Column("run", cut="middle", min_width=10, grow=1),
    Column("experiment", cut="middle", min_width=16, grow=2),
    Column("status", cut="none"),
    Column("devices", cut="none", drop=2),
    Column("why / where", cut="end", min_width=12, drop=1),
)


def _print_held(held: list[RunRecord]) -> None:
    console.print(
        f"Slurm holds {len(held)} run(s) (its queue, not this one; `mdtui queue cancel RUN` or "
        "`mdtui stop RUN` cancels one):"
    )
    table = Table(box=None, header_style="bold")
    for column in ("run", "experiment", "status", "Slurm"):
        table.add_column(column)
    for rec in held:
        table.add_row(rec.run_id, rec.experiment, rec.status, rec.slurm_line or "")
    console.print(table)


# --------------------------------------------------------------------------------------- editing


@queue_app.command("add")
def add_cmd(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Experiments, swept tables or groups to queue."),
    gpus: int | None = typer.Option(
        None, "--gpus", min=1, help="Devices each run needs (default: the experiment's `gpus`)."
    ),
    device: str | None = typer.Option(None, "--device", help='Only these devices, e.g. "0,1" or "cpu".'),
    as_json: bool = typer.Option(False, "--json", help="Print the queued runs as JSON."),
    launcher_name: str | None = typer.Option(None, "--launcher", help=LAUNCHER_HELP),
) -> None:
    """Queue runs (one per seed); an upstream (`from`) with no completed run is queued first."""
    plan, store = _open(ctx)
    launcher = launcher_or_exit(store, plan, launcher_name)
    devices = _parse_devices(device) if launcher.places_devices else ([device] if device else None)
    try:
        outcome = or_exit(lambda: actions.enqueue(launcher, plan, names, gpus=gpus, devices=devices))
    except LookupError as exc:
        usage_error(str(exc.args[0]) if exc.args else str(exc))
    except (QueueError, RunSetupError) as exc:
        usage_error(str(exc))
    if outcome.started:  # a backend that queues itself took them: they are its jobs now
        print_launched(launcher, outcome.started, as_json)
        return
    records, pid = outcome.queued, outcome.scheduler_pid
    if as_json:
        print_json([{"run_id": r.run_id, "experiment": r.experiment, "seed": r.seed} for r in records])
        return
    for rec in records:
        console.print(f"queued {rec.run_id}  {rec.experiment}  seed {rec.seed}")
    if pid:
        console.print(f"scheduler started (pid {pid}); log: {Path(store.runs_dir) / 'scheduler.log'}")
    if logout_kills_processes():
        err_console.print(LOGOUT_WARNING, markup=False)


@queue_app.command("cancel")
def cancel_cmd(
    ctx: typer.Context, run_id: str = typer.Argument(..., help="Run id (or a unique prefix/suffix).")
) -> None:
    """Take a run out of the queue (a run the queue already started is stopped)."""
    plan, store = _open(ctx)
    try:
        # a run the queue already started stops with [settings] stop_grace_seconds, like `mdtui stop`;
        # a run a backend that queues itself holds (a Slurm job) is cancelled there
        outcome = actions.cancel(store, plan, run_id)
    except (QueueError, LaunchRefused) as exc:
        usage_error(str(exc))
    _ensure(plan, store)
    console.print(f"{run_id}: {outcome}")


@queue_app.command("move")
def move_cmd(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix/suffix)."),
    to: int = typer.Option(..., "--to", min=1, help="New position, 1 = next to start."),
) -> None:
    """Reorder the queue."""
    plan, store = _open(ctx)
    try:
        position = move(store, run_id, to)
    except QueueError as exc:
        usage_error(str(exc))
    _ensure(plan, store)
    console.print(f"{run_id}: now at position {position}")


@queue_app.command("pause")
def pause_cmd(ctx: typer.Context) -> None:
    """Launch nothing new until `mdtui queue resume` (running runs carry on)."""
    plan, store = _open(ctx)
    pause(store)
    _ensure(plan, store)
    console.print("queue paused; running runs carry on")


@queue_app.command("resume")
def resume_cmd(ctx: typer.Context) -> None:
    """Start launching queued runs again."""
    plan, store = _open(ctx)
    resume_and_start(store, plan.settings.path)
    console.print("queue resumed")


# --------------------------------------------------------------------------------------- gpus


def gpus_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    launcher_name: str | None = typer.Option(None, "--launcher", help=LAUNCHER_HELP),
) -> None:
    """Devices with memory, utilisation, processes and owners, mdtui reservations and whether a run fits.

    With the Slurm launcher: the cluster's partitions and their free GPUs (one `sinfo` call)."""
    plan = _plan_if_any(ctx)
    try:
        backend = backend_for(plan, launcher_name)
    except LaunchRefused as exc:
        usage_error(str(exc))
    if not backend.places_devices:  # the cluster places runs: what its partitions have free
        _slurm_partitions(backend.name, as_json)
        return
    try:
        devices = gpus.list_devices()
    except gpus.GpuConfigError as exc:
        fail(str(exc), 2)
    policy = ledger.Policy.from_settings(plan.settings) if plan else ledger.Policy()
    held: list[ledger.Reservation] = []
    if plan is not None:
        store = open_store(plan)
        held = reservations(store)
        _ensure(plan, store)
    counts = ledger.reservation_counts(held)
    rows = []
    for d in devices:
        runs = [r.run_id for r in held if d.id in r.devices]
        rows.append({**d.to_dict(), "mdtui_runs": runs, "blocked": ledger.blocker(d, policy, counts)})
    if as_json:
        print_json({"backend": gpus.backend_name(), "t": time.time(), "devices": rows})
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "memory", "util", "processes", "mdtui runs", "free for a run?"):
        table.add_column(column)
    for row in rows:
        procs = ", ".join(f"{p['owner']}:{p['pid']} {p['memory_mb']}M" for p in row["processes"]) or "-"
        memory = f"{row['memory_used_mb']}/{row['memory_total_mb']} MiB"
        fit = (
            Text("yes", "green")
            if row["blocked"] is None
            else Text.assemble(("no", "yellow"), f": {row['blocked']}")
        )
        table.add_row(
            row["id"],
            row["name"],
            memory,
            f"{row['utilization']}%",
            procs,
            ", ".join(row["mdtui_runs"]) or "-",
            fit,
        )
    console.print(table)


def _slurm_partitions(launcher: str, as_json: bool) -> None:
    """`mdtui gpus` on a Slurm cluster: per partition, its nodes and GPUs (free = on nodes taking jobs)."""
    try:
        parts = slurm.partitions()
    except slurm.SlurmError as exc:
        usage_error(
            f"launcher {launcher}: cannot ask Slurm for its partitions: {exc}; run mdtui on a machine of the "
            "cluster, or use --launcher local"
        )
    if as_json:
        print_json({"launcher": launcher, "t": time.time(), "partitions": [p.to_dict() for p in parts]})
        return
    table = Table(box=None, header_style="bold")
    for column in ("partition", "state", "nodes", "GPUs", "in use", "free for a run"):
        table.add_column(column)
    for p in parts:
        nodes = ", ".join(f"{n} {state}" for state, n in sorted(p.states.items()))
        table.add_row(
            p.name + (" (default)" if p.default else ""),
            Text("up", "green") if p.available else Text("down", "yellow"),
            nodes,
            str(p.gpus_total),
            str(p.gpus_used),
            Text(str(p.gpus_free), "green" if p.gpus_free else "yellow"),
        )
    console.print(table)


def _plan_if_any(ctx: typer.Context) -> Plan | None:
    """The plan when an experiments file is reachable (policies, reservations); `mdtui gpus` works without."""
    explicit = plan_file(ctx)
    if explicit is None and not default_path().is_file():
        return None
    return load_plan_or_exit(explicit)


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
    app.command("gpus")(gpus_cmd)
