"""``mdtui run`` and ``mdtui demo``: launch runs through the supervisor and watch them in the foreground.

The foreground view only tails ``events.jsonl``; the run itself belongs to its detached supervisor, so
closing the terminal never kills it. Every start, stop and resume goes through the launcher that
``mdtui.execution.backends`` picks (``--launcher``, else ``[settings] launcher``) and the use cases of
``mdtui.actions``; a backend that places devices does so in one atomic step with the ledger. Ctrl-C
asks for a clean stop; a second Ctrl-C leaves the stop to the supervisor and returns at once.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
    usage_error,
)
from mdtui.execution.backends import LAUNCHER_HELP, launcher_for
from mdtui.execution.launcher import EXIT_FILE
from mdtui.execution.launching import Launcher, LaunchError, LaunchRefused
from mdtui.execution.reconcile import reconcile
from mdtui.registry.plan import select_experiments
from mdtui.results.report import render_report
from mdtui.runs.prepare import RunSetupError, dependency_order, upstream_checkpoint
from mdtui.runs.rundir import RunEvents
from mdtui.runs.status import RunStatus
from mdtui.runs.status_style import status_style
from mdtui.runs.store import RunRecord
from mdtui.system.gpus import list_devices
from mdtui.system.processes import LOGOUT_WARNING, logout_kills_processes

if TYPE_CHECKING:
    from engine.schema.events import RunState
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunStore

T = TypeVar("T")
EXIT_STOPPED = 130  # like a shell job ended by Ctrl-C
EXIT_CODES = {RunStatus.COMPLETED.value: 0, RunStatus.STOPPED.value: EXIT_STOPPED}
_DEVICE_RE = re.compile(r"^(cpu|\d+(:\d+)?|(GPU|MIG)-[0-9A-Za-z/-]+)$")  # "1:0": MIG instance 0 of GPU 1


# --------------------------------------------------------------------------- devices


def parse_devices(spec: str) -> list[str]:
    """``cpu`` or a comma list of GPU indices / UUIDs, validated against the machine when possible."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in items if not _DEVICE_RE.match(s)]
    if not items or bad or ("cpu" in items and len(items) > 1):
        usage_error(f'--device "{spec}": expected "cpu" or GPU indices such as "0" or "0,1"')
    if items == ["cpu"]:
        return items
    known = _gpu_ids()
    if known is not None:
        missing = [s for s in items if s[:1].isdigit() and s not in known]
        if missing:
            shown = ", ".join(sorted(known)) or "none (use --device cpu)"
            usage_error(f"no GPU {', '.join(missing)} on this machine; GPUs: {shown}")
    return items


def _gpu_ids() -> set[str] | None:
    try:
        return {d.id for d in list_devices() if d.id != "cpu"}
    except Exception:  # a broken NVML must not block a run the user placed explicitly
        return None


# --------------------------------------------------------------------------- watching


class RunView:
    """Renders a run's events: a live progress bar on a terminal, one line per epoch otherwise."""

    def __init__(self, rec: RunRecord, *, quiet: bool = False) -> None:
        self.rec = rec
        self.events = RunEvents(rec.run_dir)
        self.quiet = quiet
        self.progress: Any = None
        self.task: Any = None
        self.printed_epochs: set[int] = set()

    def __enter__(self) -> RunView:
        if not self.quiet and console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}", style="bold", markup=False),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.rec.experiment, total=None, info="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    @property
    def state(self) -> RunState:
        return self.events.state

    def poll(self) -> None:
        for event in self.events.stream():  # state after each event: one line per epoch
            if isinstance(event, dict) and event.get("type") == "epoch" and self.progress is None:
                self._print_epoch()
        if self.progress is not None:
            self._update_bar()

    def _info(self) -> str:
        st = self.state
        total = st.total_epochs or self.rec.total_epochs
        if st.epoch is None:
            return "starting"
        last = st.epochs[-1] if st.epochs else None
        parts = [f"epoch {st.epoch + 1}/{total or '?'}"]
        loss = st.loss if st.loss is not None else (last.train_loss if last else None)
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if last and last.eval_acc1 is not None:
            parts.append(f"acc1 {last.eval_acc1:.2f}%")
        eta = st.eta_seconds()
        if eta is not None:
            parts.append(f"ETA {fmt_duration(eta)}")
        return "  ".join(parts)

    def _update_bar(self) -> None:
        st = self.state
        total = st.total_epochs or self.rec.total_epochs
        done = float(st.epochs_done)
        if st.steps_per_epoch and st.step is not None and st.epoch is not None and st.epoch >= st.epochs_done:
            done = st.epoch + min(1.0, (st.step + 1) / st.steps_per_epoch)
        self.progress.update(self.task, total=total, completed=done, info=self._info())

    def _print_epoch(self) -> None:
        last = self.state.epochs[-1]
        if last.epoch in self.printed_epochs:
            return
        self.printed_epochs.add(last.epoch)
        if not self.quiet:
            console.print(f"{self.rec.experiment}: {self._info()}", soft_wrap=True)


def watch(launcher: Launcher, rec: RunRecord, *, quiet: bool) -> RunRecord:
    """Follow a launched run until it has ended; Ctrl-C stops it cleanly."""
    store = launcher.store
    stopping = False
    with RunView(rec, quiet=quiet) as view:
        while True:
            try:
                view.poll()
                if _recorded(store, rec) or launcher.wait(rec.run_id, timeout=0):
                    view.poll()
                    break
                time.sleep(0.25)
            except KeyboardInterrupt:
                if stopping:
                    err_console.print(f"leaving run {rec.run_id} to stop on its own (`mdtui status`)")
                    raise typer.Exit(EXIT_STOPPED) from None
                stopping = True
                err_console.print(f"stopping run {rec.run_id} (saving last.pt; Ctrl-C again to stop waiting)")
                launcher.stop(rec.run_id)
    final = store.get(rec.run_id) or rec
    if final.live:  # the supervisor died without recording the end
        reconcile(store)
        final = store.get(rec.run_id) or final
    return final


def _recorded(store: RunStore, rec: RunRecord) -> bool:
    """The supervisor has written exit.json and the final index row (it may still be writing plots)."""
    if not (Path(rec.run_dir) / EXIT_FILE).exists():
        return False
    current = store.get(rec.run_id)
    return current is not None and current.finished


def wait_for_runs(launcher: Launcher, run_ids: list[str], timeout: float = 120.0) -> None:
    """Let whoever ends the runs finish their results log entries before the command returns."""
    try:
        for run_id in run_ids:
            launcher.wait(run_id, timeout=timeout)
    except KeyboardInterrupt:
        pass


def report_line(rec: RunRecord) -> Text:
    text = Text.assemble(
        (rec.status, status_style(rec.status)),
        f" {rec.experiment} run {rec.run_id}: best acc1 {fmt_pct(rec.best_acc1)}",
    )
    if rec.best_epoch is not None:
        text.append(f" (epoch {rec.best_epoch + 1})")
    if rec.error and rec.status != RunStatus.COMPLETED:
        text.append(f"\n  {rec.error}")
    return text


def exit_code_for(records: list[RunRecord]) -> int:
    codes = [EXIT_CODES.get(r.status, EXIT_FAILED) for r in records]
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return max(codes, default=0)


# --------------------------------------------------------------------------- running


def run_foreground(
    plan: Plan, store: RunStore, exps: list[Experiment], *, device: str | None, as_json: bool
) -> list[RunRecord]:
    """Run ``exps`` (each seed) one after another in dependency order; stop at a user stop."""
    launcher = launcher_or_exit(store, plan, None)
    finished: list[RunRecord] = []
    try:
        _run_in_order(plan, launcher, exps, device=device, as_json=as_json, finished=finished)
    finally:
        wait_for_runs(launcher, [r.run_id for r in finished if r.run_id != "-"])
    return finished


def _run_in_order(
    plan: Plan,
    launcher: Launcher,
    exps: list[Experiment],
    *,
    device: str | None,
    as_json: bool,
    finished: list[RunRecord],
) -> None:
    devices = devices_or_exit(launcher, device)
    for exp, seed in actions.planned_runs(plan, exps):
        try:
            rec = or_exit(
                lambda exp=exp, seed=seed: launcher.start_new(plan, exp, seed=seed, devices=devices)
            )
        except RunSetupError as exc:
            err_console.print(Text.assemble(("error:", "bold red"), f" {exc}"), soft_wrap=True)
            finished.append(_setup_failure(exp, seed, str(exc)))
            continue
        if not as_json:
            console.print(
                f"run {rec.run_id}: {exp.name} (seed {seed}) on {','.join(rec.devices)} -> {rec.run_dir}",
                soft_wrap=True,
                highlight=False,
            )
        final = watch(launcher, rec, quiet=as_json)
        finished.append(final)
        if not as_json:
            console.print(report_line(final), soft_wrap=True)
        if final.status == RunStatus.STOPPED:
            return  # the user stopped: do not start the rest


def or_exit(action: Callable[[], T]) -> T:
    """Run a launcher action; its refusals become the CLI's answers: a user mistake (the run must
    not start now) exits 2, a backend that cannot take it now exits 1."""
    try:
        return action()
    except LaunchRefused as exc:
        usage_error(str(exc))
    except LaunchError as exc:  # NoDevice (nothing fits now), SubmitError (sbatch said no), ...
        fail(str(exc))


def launcher_or_exit(store: RunStore, plan: Plan, flag: str | None) -> Launcher:
    """The launcher ``--launcher`` (else ``[settings] launcher``) names; a wrong or unusable one exits 2."""
    try:
        return launcher_for(store, plan, flag)
    except LaunchRefused as exc:
        usage_error(str(exc))


def devices_or_exit(launcher: Launcher, device: str | None) -> list[str] | None:
    """``--device``: validated against this machine for a backend that places devices; another one
    is told, and refuses them with its reason."""
    if not device:
        return None
    return parse_devices(device) if launcher.places_devices else [device]


def _setup_failure(exp: Experiment, seed: int, error: str) -> RunRecord:
    return RunRecord(
        run_id="-",
        experiment=exp.name,
        group=exp.group,
        status=RunStatus.FAILED.value,
        seed=seed,
        error=error,
    )


def start_detached(
    launcher: Launcher, plan: Plan, exps: list[Experiment], *, device: str | None
) -> list[RunRecord]:
    """Start every run of ``exps`` now and return (``--detach``; a backend that queues itself takes
    them all at once, upstreams first). A run that cannot start exits before the ones after it."""
    if not launcher.queues_itself:  # mdtui starts them at once: every upstream must be there already
        errors = []
        for exp in dependency_order(plan, exps):
            try:
                upstream_checkpoint(launcher.store, exp)
            except RunSetupError as exc:
                errors.append(str(exc))
        if errors:
            fail(
                "\n".join(errors) + "\n(--detach starts runs at once; `mdtui queue add` waits for upstreams)"
            )
        if logout_kills_processes():
            err_console.print(LOGOUT_WARNING, markup=False)
    devices = devices_or_exit(launcher, device)
    try:
        return or_exit(lambda: actions.start(launcher, plan, exps, devices=devices).started)
    except RunSetupError as exc:
        usage_error(str(exc))


def resume_run(launcher: Launcher, ref: str, *, device: str | None) -> RunRecord:
    """Run a stopped / failed / lost run again in its own directory with ``--resume``.

    Refused with exit 2 while the run (or its old engine) is alive, when it completed, or without a
    ``last.pt``; exit 1 when no device fits now.
    """
    reconcile(launcher.store)
    rec = resolve_run_or_exit(launcher.store, ref)
    devices = devices_or_exit(launcher, device)
    return or_exit(lambda: actions.resume(launcher, rec, devices))


def slurm_time_or_exit(launcher: Launcher, text: str) -> None:
    """``--time``: the time limit of the jobs this command submits (Slurm only; exit 2 otherwise)."""
    from mdtui.registry.slurm_options import CHECKS

    value = CHECKS["time"][0](text)
    if not hasattr(launcher, "time"):
        usage_error("--time sets a Slurm job's time limit: use it with --launcher slurm")
    if value is None:
        usage_error(f"--time {text!r} is not a Slurm time limit; expected {CHECKS['time'][1]}")
    launcher.time = value


def select(plan: Plan, names: list[str]) -> list[Experiment]:
    """Experiments, swept tables or groups by name; unknown names exit 2 with the closest matches."""
    try:
        return select_experiments(plan, names)
    except LookupError as exc:
        usage_error(str(exc.args[0]) if exc.args else str(exc))


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        ctx: typer.Context,
        names: list[str] = typer.Argument(None, help="Experiments, swept tables or groups to run."),
        device: str | None = typer.Option(None, "--device", "-d", help='"cpu" or GPU indices like "0,1".'),
        detach: bool = typer.Option(False, "--detach", help="Start and return; the runs keep going."),
        as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
        resume: str | None = typer.Option(None, "--resume", help="Resume a stopped/failed run (id or name)."),
        launcher_name: str | None = typer.Option(None, "--launcher", help=LAUNCHER_HELP),
        time_limit: str | None = typer.Option(
            None, "--time", help='Slurm time limit of these jobs, e.g. "2:00:00" (over the experiments file).'
        ),
    ) -> None:
        """Run experiments now (each seed once), showing progress; Ctrl-C stops cleanly."""
        plan = load_plan_or_exit(plan_file(ctx))
        store = open_store(plan)
        launcher = launcher_or_exit(store, plan, launcher_name)
        if time_limit is not None:
            slurm_time_or_exit(launcher, time_limit)
        if resume and names:
            usage_error("give either experiment names or --resume RUN, not both")
        if not resume and not names:
            usage_error("name at least one experiment (see `mdtui list`), or --resume RUN")
        if resume:
            launched = [resume_run(launcher, resume, device=device)]
        elif detach or launcher.queues_itself:  # a backend that queues itself has taken them all
            launched = start_detached(launcher, plan, select(plan, names), device=device)
            if not detach and len(launched) > 1:
                # in the foreground each job is followed in turn, as its progress comes
                print_launched(launcher, launched, as_json)
                finals = [watch(launcher, rec, quiet=as_json) for rec in launched]
                if as_json:
                    print_json([r.to_json() for r in finals])
                else:
                    for final in finals:
                        console.print(report_line(final), soft_wrap=True)
                raise typer.Exit(exit_code_for(finals))
        else:
            records = run_foreground(plan, store, select(plan, names), device=device, as_json=as_json)
            if as_json:
                print_json([r.to_json() for r in records])
            raise typer.Exit(exit_code_for(records))
        if detach:
            print_launched(launcher, launched, as_json)
            return
        if launcher.queues_itself and not as_json:
            print_launched(launcher, launched, as_json)  # its job id, then its progress
        rec = launched[0]
        final = watch(launcher, rec, quiet=as_json)
        wait_for_runs(launcher, [rec.run_id])
        if as_json:
            print_json([final.to_json()])
        else:
            console.print(report_line(final), soft_wrap=True)
        raise typer.Exit(exit_code_for([final]))

    @app.command("demo")
    def demo_cmd(ctx: typer.Context) -> None:
        """Run the `demo` group end to end on the embedded data, then print a summary."""
        plan = load_plan_or_exit(plan_file(ctx))
        exps = plan.group("demo")
        if not exps:
            groups = ", ".join(plan.groups()) if hasattr(plan, "groups") else ""
            usage_error(
                f'{plan.settings.path} has no experiments in group "demo"'
                + (f"; groups: {groups}" if groups else "")
            )
        store = open_store(plan)
        console.print(f"mdtui demo: {len(exps)} experiments of group demo, runs in {store.runs_dir}")
        records = run_foreground(plan, store, exps, device=None, as_json=False)
        _print_summary(records)
        _print_report(store, plan)
        raise typer.Exit(exit_code_for(records))


def print_launched(launcher: Launcher, launched: list[RunRecord], as_json: bool) -> None:
    """What was started (or handed to a backend that queues itself) and how to follow it."""
    records = [launcher.store.get(r.run_id) or r for r in launched]
    if as_json:
        print_json([r.to_json() for r in records])
        return
    for rec in records:
        if launcher.queues_itself:
            where = f"{rec.slurm_line or launcher.name}  script {rec.run_dir / 'job.sbatch'}"
            line = f"submitted {rec.run_id}  {rec.experiment}  seed {rec.seed}  {where}"
        else:
            line = f"started {rec.run_id}: {rec.experiment} (supervisor pid {rec.supervisor_pid}) -> {rec.run_dir}"
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    if not launcher.queues_itself:
        console.print(
            "follow with `mdtui logs RUN --follow`, check with `mdtui status`, stop with `mdtui stop RUN`"
        )


def _print_summary(records: list[RunRecord]) -> None:
    from rich.table import Table

    table = Table(title="demo summary")
    for col in ("experiment", "run", "status", "best acc1", "epoch", "time"):
        table.add_column(col)
    for r in records:
        took = (r.ended_t - r.started_t) if r.ended_t and r.started_t else None
        table.add_row(
            r.experiment,
            r.run_id,
            r.status,
            fmt_pct(r.best_acc1),
            "-" if r.best_epoch is None else str(r.best_epoch + 1),
            fmt_duration(took),
        )
    console.print(table)


def _print_report(store: RunStore, plan: Plan) -> None:
    try:
        text = render_report(store, plan, ["demo"], fmt="md")
    except Exception as exc:  # the runs are done and recorded; a report problem must not hide that
        err_console.print(f"(report unavailable: {exc})")
        return
    console.print("\nmdtui report demo", style="bold")
    # A plain write: Rich would wrap wide markdown tables and break them.
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
