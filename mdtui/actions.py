"""Start, queue, stop and resume experiments: the use cases the CLI verbs and the TUI share.

`mdtui run`, `mdtui queue add|cancel`, `mdtui stop` and the TUI's start, queue and stop keys come
here with a launcher from ``mdtui.execution.backends`` and never ask which backend it is: a backend
that queues itself (Slurm) takes every run at once, one that does not (this machine) starts what fits
and leaves the rest to mdtui's queue and its scheduler. Errors are the launcher's ``LaunchError``
family and ``RunSetupError``; callers turn them into exit codes or messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mdtui.execution import ranks
from mdtui.execution.backends import launcher_of, queue_launcher
from mdtui.execution.launching import Launcher, LaunchError, LaunchRefused, NoDevice, StopTarget
from mdtui.registry.plan import select_experiments
from mdtui.runs.prepare import RunSetupError, dependency_order, require_data, seeds_of
from mdtui.runs.status import WAITING
from mdtui.scheduling import scheduler

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunRecord, RunStore


@dataclass
class Outcome:
    """What a start or queue did."""

    started: list[RunRecord] = field(default_factory=list)  # started, or handed to a self-queueing backend
    queued: list[RunRecord] = field(default_factory=list)  # put in mdtui's queue instead
    errors: list[str] = field(default_factory=list)  # runs that could not be started or queued
    deferred: list[str] = field(default_factory=list)  # experiments sent to the queue, not started now
    scheduler_pid: int | None = None  # a scheduler started for the queued runs


def planned_runs(plan: Plan, exps: list[Experiment]) -> list[tuple[Experiment, int]]:
    """(experiment, seed) of every run ``exps`` make, upstreams first."""
    return [(exp, seed) for exp in dependency_order(plan, exps) for seed in seeds_of(exp)]


def start(
    launcher: Launcher,
    plan: Plan,
    exps: list[Experiment],
    *,
    devices: list[str] | None = None,
    when_busy: Literal["raise", "queue"] = "raise",
) -> Outcome:
    """Start one run per seed of each experiment now, upstreams first.

    ``when_busy="raise"`` (the CLI): the first error is raised (``NoDevice``, ``SubmitError``,
    ``LaunchRefused``, ``RunSetupError``) and nothing after it is started. ``"queue"`` (the TUI): an
    experiment with no free device, or whose upstream has not completed, goes to mdtui's queue
    instead; other errors are collected and the experiment's remaining seeds skipped.
    """
    outcome = Outcome()
    to_queue: list[str] = []
    failed: set[str] = set()  # experiments whose remaining seeds are skipped after an error
    store = launcher.store
    runs = planned_runs(plan, exps)
    # Pre-flight for every experiment before the first run starts: `mdtui run a b` with b's dataset
    # missing starts nothing, and the TUI never shows a data-less experiment as queued.
    for exp in {exp.name: exp for exp, _ in runs}.values():
        try:
            require_data(plan, exp)
            refusal = ranks.one_process_refusal(exp.config, ranks.process_count(exp.config, devices or []))
            if refusal:
                raise RunSetupError(f"{exp.name}: {refusal}")
        except RunSetupError as exc:
            if when_busy == "raise":
                raise
            failed.add(exp.name)
            outcome.errors.append(str(exc))
    for exp, seed in runs:
        if exp.name in to_queue or exp.name in failed:
            continue
        if (
            when_busy == "queue"
            and not launcher.queues_itself
            and exp.upstream
            and store.latest_completed(exp.upstream) is None
        ):
            to_queue.append(exp.name)  # the queue waits for (and runs) its upstream first
            continue
        try:
            outcome.started.append(
                launcher.start_new(plan, exp, seed=seed, devices=devices, cpu_always=when_busy == "raise")
            )
        except NoDevice:
            if when_busy == "raise":
                raise
            to_queue.append(exp.name)
        except (RunSetupError, LaunchError) as exc:
            if when_busy == "raise":
                raise
            failed.add(exp.name)
            outcome.errors.append(str(exc))
    outcome.deferred = to_queue
    if to_queue:
        queued = enqueue(launcher, plan, to_queue, devices=devices, collect=True)
        outcome.queued, outcome.errors = queued.queued, outcome.errors + queued.errors
        outcome.scheduler_pid = queued.scheduler_pid
    return outcome


def enqueue(
    launcher: Launcher,
    plan: Plan,
    names: list[str],
    *,
    gpus: int | None = None,
    devices: list[str] | None = None,
    collect: bool = False,
) -> Outcome:
    """Queue one run per seed of each named experiment (an upstream with no run is queued first).

    A backend that queues itself takes them now (``start``); otherwise they go to mdtui's queue and
    a scheduler is started for them. Unknown names raise ``LookupError``, impossible device requests
    ``QueueError`` (``collect``: both become ``errors``).
    """
    store = launcher.store
    try:
        if launcher.queues_itself:
            if gpus is not None:
                raise LaunchRefused(
                    f"--gpus: with --launcher {launcher.name} set gpus = N on the experiment "
                    "(the backend is asked for N GPUs)"
                )
            return start(launcher, plan, select_experiments(plan, names), devices=devices)
        records, pid = scheduler.enqueue_and_start(store, plan, names, gpus=gpus, devices=devices)
    except (LookupError, scheduler.QueueError, RunSetupError, LaunchError) as exc:
        if not collect:
            raise
        return Outcome(errors=[str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)])
    return Outcome(queued=records, scheduler_pid=pid)


def resume(launcher: Launcher, rec: RunRecord, devices: list[str] | None = None) -> RunRecord:
    """Run a stopped / failed / lost run again in its directory from last.pt, on ``launcher``'s
    backend (a run may move between backends: it keeps its directory)."""
    return launcher.resume(rec, devices)


def stop(
    store: RunStore,
    plan: Plan | None,
    rec: RunRecord,
    *,
    kill: bool = False,
    wait: bool = False,
    grace: float | None = None,
) -> str:
    """Stop (or ``kill``) a run wherever it is; what happened, in words: "stopping", "cancelled",
    "already finished". A run waiting in mdtui's queue is taken out of it; one a backend holds before
    it started is cancelled there. ``LaunchRefused`` when the run has nothing to stop."""
    launcher = launcher_of(store, rec, plan)
    if rec.status in WAITING and not launcher.queues_itself:
        return scheduler.cancel(store, rec.run_id, launcher=launcher)
    target = launcher.stop_target(rec)
    if target is None:
        raise LaunchRefused(f"run {rec.run_id} ({rec.experiment}) is not running (status: {rec.status})")
    sent = launcher.kill(rec.run_id) if kill else launcher.stop(rec.run_id, wait=wait, grace=grace)
    if not sent:
        return "already finished"
    return "cancelled" if target == StopTarget.PENDING else "stopping"


def cancel(store: RunStore, plan: Plan | None, run_ref: str) -> str:
    """`mdtui queue cancel`: a run in mdtui's queue (a launched one is stopped), or one that a
    self-queueing backend holds (cancelled there). ``QueueError`` when neither knows the run."""
    try:
        return scheduler.cancel(store, run_ref, launcher=queue_launcher(store, plan))
    except scheduler.QueueError as not_queued:
        try:
            rec = store.resolve(run_ref)
        except LookupError:
            raise not_queued from None
        if not launcher_of(store, rec, plan).queues_itself:
            raise
        return stop(store, plan, rec)
