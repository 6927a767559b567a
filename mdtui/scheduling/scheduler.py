"""The scheduler: one detached process per runs directory that launches queued runs when devices fit.

``python -m mdtui.scheduling.scheduler RUNS_DIR EXPERIMENTS_TOML`` is started on demand by ``ensure_scheduler``
(every CLI verb that touches the queue calls it) and holds ``RUNS_DIR/scheduler.lock``. Each pass it
reconciles live runs (pid + start-time identity, ``RunStore.refresh``), marks runs whose upstream
failed ``blocked`` (and unblocks them when the upstream is queued again), launches ready runs in
queue order through the launcher when the ledger finds devices (later runs may pass one that waits
for devices), checks that launched runs sit on the GPUs they were given, and exits when nothing is
queued and nothing it launched is alive. All state lives in the database and the run directories:
killing it loses nothing, and a new one picks up exactly there.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.execution import ledger, ranks
from mdtui.execution.backends import queue_launcher
from mdtui.execution.ending import end_unstarted
from mdtui.execution.launcher import find_supervisor
from mdtui.execution.launching import Launcher
from mdtui.execution.ledger import gpus_snapshot, pick_devices, reservations, waiting_reason
from mdtui.execution.reconcile import reconcile
from mdtui.registry.plan import ExperimentsError, load_plan, select_experiments
from mdtui.runs.prepare import combine_path, seeds_of, upstream_checkpoint
from mdtui.runs.status import FINISHED, LIVE, WAITING, RunStatus
from mdtui.runs.store import DB_NAME, RunStore
from mdtui.scheduling import queue as runqueue
from mdtui.scheduling import retry
from mdtui.scheduling.queue import QueueEntry, QueueError, entries, transition
from mdtui.system import gpus
from mdtui.system.fs import atomic_write_json, file_lock, read_json, try_lock

if TYPE_CHECKING:
    from mdtui.registry.plan import Plan
    from mdtui.runs.store import RunRecord

__all__ = [
    "QueueEntry",
    "QueueError",
    "cancel",
    "enqueue",
    "enqueue_and_start",
    "ensure_scheduler",
    "move",
    "pause",
    "pick_devices",
    "queue_entries",
    "resume",
    "resume_and_start",
]

LOCK_NAME = "scheduler.lock"
ENQUEUE_LOCK = "queue.lock"
LOG_NAME = "scheduler.log"
POLL_SECONDS = float(os.environ.get("MDTUI_SCHEDULER_POLL", "0.5"))
PLACEMENT_WINDOW = 120.0  # seconds after launch during which a run's GPU placement is checked
ORPHAN_GRACE = 5.0  # a claim older than this with no supervisor was left by a killed scheduler
PAUSED_REASON = "the queue is paused (`mdtui queue resume`)"


# --------------------------------------------------------------------------------------- client API


def enqueue(
    store: RunStore,
    plan: Plan,
    names: list[str],
    *,
    gpus: int | None = None,
    devices: list[str] | None = None,
) -> list[RunRecord]:
    """Queue one run per seed of each named experiment (sweeps and groups expand), upstreams first.

    An upstream (``from``) with no completed, queued or running run is queued too. Raises LookupError
    for unknown names and QueueError for device requests this machine can never meet. No scheduler is
    started (``enqueue_and_start`` starts one).
    """
    return _enqueue(store, plan, names, gpus=gpus, devices=devices, experiments=None)[0]


def enqueue_and_start(
    store: RunStore,
    plan: Plan,
    names: list[str],
    *,
    gpus: int | None = None,
    devices: list[str] | None = None,
) -> tuple[list[RunRecord], int | None]:
    """``enqueue``, with the scheduler started *before* the rows are written, under the enqueue lock;
    returns the records and the pid of a scheduler started for them (None: one was running, or the
    queue is paused).

    "Queue, then start the scheduler" leaves a window in which a caller killed between the two steps
    (a ``kill -9`` of the TUI) leaves queued runs that nothing will ever start. Started first, the
    scheduler decides that the queue is empty only under the same lock (``run_scheduler``), so it
    sees every row this call writes, and a caller killed before the rows leaves nothing queued.
    """
    return _enqueue(store, plan, names, gpus=gpus, devices=devices, experiments=plan.settings.path)


def _enqueue(
    store: RunStore,
    plan: Plan,
    names: list[str],
    *,
    gpus: int | None,
    devices: list[str] | None,
    experiments: Path | None,
) -> tuple[list[RunRecord], int | None]:
    """The queueing both ``enqueue`` and ``enqueue_and_start`` do; the scheduler is started first when
    ``experiments`` (the file it reads) is given."""
    exps = select_experiments(plan, names)
    policy = ledger.Policy.from_settings(plan.settings)
    snapshot = gpus_snapshot()
    for exp in exps:
        count = gpus or exp.gpus
        processes = (
            ranks.process_count(exp.config, devices) if devices else ranks.configured(exp.config) or count
        )
        problem = ledger.never_fits(snapshot, policy, count, devices) or ranks.one_process_refusal(
            exp.config, processes
        )
        if problem:
            raise QueueError(f"{exp.name}: {problem}")
    records = []
    pid = None
    # one enqueue at a time per runs directory: "is the upstream already queued?" and "queue it" must
    # be one step, or two concurrent `queue add` commands would both queue the same upstream
    with file_lock(Path(store.runs_dir) / ENQUEUE_LOCK):
        # a paused queue needs none for its new rows, but one may still be owed to runs it launched
        if experiments is not None and (not is_paused(store) or has_work(store)):
            pid = _start_first(store, experiments)
        for exp in runqueue.expand_with_upstreams(store, plan, exps):
            count = gpus if gpus is not None and exp in exps else exp.gpus
            for seed in seeds_of(exp):
                records.append(runqueue.add(store, plan, exp, seed=seed, gpus=count, devices=devices))
    return records, pid


def queue_entries(store: RunStore, *, include_launched: bool = True) -> list[QueueEntry]:
    return entries(store, include_launched=include_launched)


def cancel(store: RunStore, run_id: str, *, launcher: Launcher | None = None) -> str:
    """Cancel a queued run, or stop it (through ``launcher``, whose grace is the plan's) if the
    scheduler already launched it; returns what happened."""
    entry = runqueue.find(store, run_id)
    if runqueue.cancel_waiting(store, entry.run_id):
        return "cancelled"
    launcher = launcher or queue_launcher(store)
    runqueue.remove(store, entry.run_id)
    return "stopping" if launcher.stop(entry.run_id) else "already finished"


def move(store: RunStore, run_id: str, position: int) -> int:
    return runqueue.move(store, runqueue.find(store, run_id).run_id, position)


def pause(store: RunStore) -> None:
    runqueue.set_state(store, "paused", str(time.time()))


def resume(store: RunStore) -> None:
    runqueue.set_state(store, "paused", None)


def resume_and_start(store: RunStore, experiments: Path | str | None) -> int | None:
    """``resume``, with the scheduler started first under the enqueue lock when the queue holds work
    (as ``enqueue_and_start`` does, and for the same reason); the pid of one started, else None."""
    with file_lock(Path(store.runs_dir) / ENQUEUE_LOCK):
        pid = _start_first(store, experiments) if has_work(store, paused=False) else None
        resume(store)
    return pid


def _start_first(store: RunStore, experiments: Path | str | None) -> int | None:
    """Under the enqueue lock, before the caller writes the work: start a scheduler unless one runs.
    It waits for that lock before it decides the queue is empty (``run_scheduler``)."""
    if scheduler_running(store.runs_dir):
        return None
    return start_scheduler(store.runs_dir, experiments or runqueue.state(store, "experiments"))


def is_paused(store: RunStore) -> bool:
    return runqueue.state(store, "paused") is not None


# --------------------------------------------------------------------------------------- ensure


def lock_path(runs_dir: Path) -> Path:
    return Path(runs_dir) / LOCK_NAME


def scheduler_running(runs_dir: Path | str) -> bool:
    fd = try_lock(lock_path(Path(runs_dir)))
    if fd is None:
        return True
    os.close(fd)
    return False


def has_work(store: RunStore, *, paused: bool | None = None) -> bool:
    """Something the scheduler must act on: a queued run (unless paused), an unblockable run, or a run
    it launched that is still alive (or an unfinished claim of a killed scheduler). Entries of runs
    that finished while no scheduler watched (it was killed as they ended) are dropped here.
    ``paused``: as if the queue were (or were not) paused, instead of as it is."""
    paused = is_paused(store) if paused is None else paused
    for entry in entries(store):
        if not entry.waiting and entry.status in FINISHED:
            runqueue.remove(store, entry.run_id)
            continue
        if not entry.waiting and entry.status in LIVE:
            return True
        if paused or not entry.waiting:
            continue
        if entry.status == RunStatus.QUEUED:
            return True
        if entry.status == RunStatus.BLOCKED and runqueue.needs_state(store, entry.needs)[0] != "blocked":
            return True
    return False


def ensure_scheduler(runs_dir: Path | str, experiments: Path | str | None = None) -> int | None:
    """Start the detached scheduler if the queue has work and none holds the lock; its pid, else None."""
    runs_dir = Path(runs_dir).expanduser().resolve()
    if not (runs_dir / DB_NAME).exists():
        return None
    store = RunStore(runs_dir)
    if not has_work(store) or scheduler_running(runs_dir):
        return None
    return start_scheduler(runs_dir, experiments or runqueue.state(store, "experiments"))


def start_scheduler(runs_dir: Path | str, experiments: Path | str | None) -> int:
    """Start a detached scheduler for ``runs_dir`` (it exits at once if another holds the lock); its pid."""
    runs_dir = Path(runs_dir)
    toml = experiments or ""
    with open(runs_dir / LOG_NAME, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mdtui.scheduling.scheduler", str(runs_dir), str(toml)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the terminal and the command that started it
            close_fds=True,
        )
    _STARTED.append(proc)  # keep the handle so the child is reaped here, not left a zombie
    return proc.pid


_STARTED: list[subprocess.Popen[bytes]] = []


def ensure_scheduler_for(file: Path | str | None = None) -> int | None:
    """``ensure_scheduler`` for the experiments file a CLI verb uses; never raises (for cli.py's root
    callback, so that any mdtui command restarts a killed scheduler)."""
    try:
        plan = load_plan(Path(file) if file is not None else None)
        return ensure_scheduler(plan.settings.runs_dir, plan.settings.path)
    except Exception:  # no or broken experiments.toml: the verb itself will say so
        return None


# --------------------------------------------------------------------------------------- the process


def log(msg: str) -> None:
    sys.stdout.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [scheduler {os.getpid()}] {msg}\n")
    sys.stdout.flush()


class Scheduler:
    def __init__(self, store: RunStore, experiments: Path | None, launcher: Launcher | None = None) -> None:
        self.store = store
        self.experiments = experiments
        # mdtui's queue feeds the backend that does not queue itself (a Slurm job is queued by Slurm)
        self.launcher = launcher or queue_launcher(store)
        self.policy = ledger.Policy()
        self._plan_mtime: float | None = None
        self.launched: dict[str, float] = {}  # run id -> launch time (placement checks)
        self.ready: set[str] = set()  # waiting runs whose dependencies are met (this pass)

    # ------------------------------------------------------------ policies

    def reload_policy(self) -> None:
        """Re-read [settings] when experiments.toml changed; a broken file keeps the last policy."""
        if self.experiments is None:
            return
        try:
            mtime = self.experiments.stat().st_mtime
        except OSError:
            return
        if mtime == self._plan_mtime:
            return
        self._plan_mtime = mtime
        try:
            settings = load_plan(self.experiments).settings
            self.policy = ledger.Policy.from_settings(settings)
            self.launcher.configure(settings)  # e.g. CPU-thread splitting and the stop grace
            log(f"policy: {self.policy}")
        except ExperimentsError as exc:
            log(f"{self.experiments} has errors; keeping the previous policy:\n{exc}")

    # ------------------------------------------------------------ reconciliation

    def recover_orphan_claims(self) -> None:
        """Runs claimed (``starting``) by a scheduler that died before their supervisor started go back
        to the queue; a supervisor that did start is left alone (it records itself)."""
        now = time.time()
        for entry in entries(self.store):
            if entry.waiting or entry.status != RunStatus.STARTING or entry.run_id in self.launched:
                continue
            rec = self.store.get(entry.run_id)
            if (
                rec is None
                or rec.supervisor_pid is not None
                or now - (entry.launched_t or now) < ORPHAN_GRACE
            ):
                continue
            if find_supervisor(rec.run_dir) is not None:
                continue
            if transition(
                self.store,
                rec.run_id,
                (RunStatus.STARTING,),
                status=RunStatus.QUEUED.value,
                devices=[],
                started_t=None,
            ):
                runqueue.unmark_launched(self.store, rec.run_id)
                log(f"{rec.run_id}: claimed by a scheduler that died before launching it; back in the queue")

    def reconcile_runs(self) -> None:
        """Finalise dead runs (and give back the claims of a scheduler that died)."""
        self.recover_orphan_claims()
        for rec in reconcile(self.store):
            log(f"{rec.run_id} ({rec.experiment}) reconciled: {rec.status}")

    def reconcile_queue(self) -> None:
        """Drop finished entries, (un)block waiting ones; note which are ready."""
        ready: set[str] = set()
        memo: dict[tuple[str, ...], tuple[str, str | None]] = {}
        for entry in entries(self.store):
            if not entry.waiting:
                if entry.status not in LIVE:
                    runqueue.remove(self.store, entry.run_id)
                    self.launched.pop(entry.run_id, None)
                continue
            if entry.status in LIVE:  # launched, but the entry was not marked
                runqueue.mark_launched(self.store, entry.run_id)
                continue
            if entry.status not in WAITING:  # cancelled or finished behind our back
                runqueue.remove(self.store, entry.run_id)
                continue
            if entry.needs not in memo:  # many seeds of one experiment share their upstream
                memo[entry.needs] = runqueue.needs_state(self.store, entry.needs)
            state, reason = memo[entry.needs]
            if state == "ready":
                ready.add(entry.run_id)
            if state == "blocked" and entry.status == RunStatus.QUEUED:
                if transition(
                    self.store,
                    entry.run_id,
                    (RunStatus.QUEUED,),
                    status=RunStatus.BLOCKED.value,
                    error=reason,
                ):
                    log(f"{entry.run_id} ({entry.experiment}) blocked: {reason}")
            elif (
                state != "blocked"
                and entry.status == RunStatus.BLOCKED
                and transition(
                    self.store, entry.run_id, (RunStatus.BLOCKED,), status=RunStatus.QUEUED.value, error=None
                )
            ):
                log(f"{entry.run_id} ({entry.experiment}) unblocked")
            if state != "ready" and reason != entry.reason:
                runqueue.set_reason(self.store, entry.run_id, reason)
        self.ready = ready

    # ------------------------------------------------------------ launching

    def launch_ready(self) -> None:
        if is_paused(self.store):
            for entry in entries(self.store, include_launched=False):
                if entry.status == RunStatus.QUEUED and entry.reason != PAUSED_REASON:
                    runqueue.set_reason(self.store, entry.run_id, PAUSED_REASON)
            return
        devices = gpus_snapshot()
        held: list[ledger.Reservation] | None = None  # read for the reasons only, once per launch
        for entry in entries(self.store, include_launched=False):
            if entry.status != RunStatus.QUEUED or entry.run_id not in self.ready:
                continue
            chosen = self.reserve(entry, devices)
            if chosen is not None:
                self.launch(entry, chosen)
                held = None
                continue
            held = held if held is not None else reservations(self.store)
            reason = waiting_reason(devices, held, self.policy, entry.gpus, entry.devices or ())
            if reason != entry.reason:
                runqueue.set_reason(self.store, entry.run_id, reason)

    def reserve(self, entry: QueueEntry, devices: list[gpus.Device]) -> list[str] | None:
        """Pick devices and claim the run in one step under the ledger lock (the CLI and the TUI take
        the same lock), so a launch racing this one never gets the same device. The claim is the
        conditional queued -> starting update: only one process ever moves a run out of the queue."""
        return ledger.reserve(
            self.store,
            self.policy,
            entry.gpus,
            lambda chosen: runqueue.claim(self.store, entry.run_id, chosen),
            candidates=list(entry.devices or ()) or None,
            snapshot=devices,
        )

    def launch(self, entry: QueueEntry, devices: list[str]) -> None:
        """Hand a claimed run to the launcher (its devices are already reserved)."""
        self.launched[entry.run_id] = time.monotonic()
        rec = self.store.get(entry.run_id)
        assert rec is not None
        try:
            resolve_dependencies(self.store, rec, entry.needs)
            self.launcher.submit(entry.run_id, devices)
        except Exception as exc:  # a broken run must not stop the queue
            log(f"{entry.run_id}: launch failed: {exc}")
            # unless the launcher has already ended it: a run that never started, like any other
            end_unstarted(
                self.store, entry.run_id, RunStatus.FAILED, f"launch failed: {exc}", from_statuses=LIVE
            )
            return
        log(f"{entry.run_id} ({entry.experiment}) launched on {','.join(devices)}")

    # ------------------------------------------------------------ placement check

    def check_placement(self) -> None:
        """Where NVML sees processes: is each fresh run's process tree on the GPUs it was given?"""
        if not self.launched:
            return
        devices = [d for d in gpus_snapshot() if not d.is_cpu]
        now = time.monotonic()
        for run_id, launched_at in list(self.launched.items()):
            rec = self.store.get(run_id)
            if rec is None or rec.status not in LIVE or now - launched_at > PLACEMENT_WINDOW:
                self.launched.pop(run_id, None)
                continue
            pids = process_tree(rec.supervisor_pid) | ({rec.pid} if rec.pid else set())
            seen_on = {d.id for d in devices for p in d.processes if p.pid in pids}
            if not seen_on:
                continue  # not on a GPU yet, or NVML cannot see this pid namespace
            self.launched.pop(run_id, None)
            stray = sorted(seen_on - set(rec.devices))
            if stray:
                msg = (
                    f"run {run_id} was given device(s) {','.join(rec.devices)} but its processes are on "
                    f"{','.join(stray)}: check CUDA_VISIBLE_DEVICES handling in the training code"
                )
                log(msg)
                runqueue.log_event(rec, "warning", msg)

    # ------------------------------------------------------------ loop

    def busy(self) -> bool:
        """Queued work remains (a paused queue has none), or a run this queue launched is still alive."""
        queued = "" if is_paused(self.store) else RunStatus.QUEUED
        return any(
            (e.waiting and e.status == queued) or (not e.waiting and e.status in LIVE)
            for e in entries(self.store)
        ) or retry.watching(self.store)  # a run it resumed may need resuming again

    def step(self) -> None:
        self.reload_policy()
        self.reconcile_runs()
        if not is_paused(self.store):  # lost and failed runs their policy resumes (before new ones)
            retry.retry_ended(self.store, self.launcher, log)
        # after the retries: a dependant of a run that is being resumed waits for it, and is not
        # shown blocked ("queue it again") for the one pass between the loss and the resume
        self.reconcile_queue()
        self.launch_ready()
        self.check_placement()


def resolve_dependencies(store: RunStore, rec: RunRecord, needs: tuple[str, ...]) -> None:
    """Fill the upstream's checkpoint (and combined masks) into config.json, as `mdtui run` would."""
    from types import SimpleNamespace

    config_path = rec.run_dir / "config.json"
    config = read_json(config_path)
    if not isinstance(config, dict) or not needs:
        return
    info = read_json(rec.run_dir / "run.json") or {}
    exp: Any = SimpleNamespace(name=rec.experiment, upstream=info.get("upstream"), config=config)
    config["init_checkpoint"] = upstream_checkpoint(store, exp)
    combined = combine_path(store, exp)
    if combined is not None:
        config.setdefault("doctor", {}).setdefault("mask", {})["combine_path"] = combined
    atomic_write_json(config_path, config)


def process_tree(pid: int | None) -> set[int]:
    if not pid:
        return set()
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


def run_scheduler(runs_dir: Path, experiments: Path | None) -> int:
    """The scheduler's main loop; returns when another holds the lock or the queue has drained."""
    fd: int | None = try_lock(lock_path(runs_dir))
    if fd is None:
        return 0  # another scheduler owns this runs directory
    store = RunStore(runs_dir)
    scheduler = Scheduler(store, experiments)
    log(f"started for {runs_dir} ({gpus.backend_name()} devices)")
    try:
        while True:
            try:
                scheduler.step()
            except Exception as exc:  # a transient error (locked db, vanished file) is retried next pass
                log(f"pass failed, retrying: {exc!r}")
            if scheduler.busy():
                time.sleep(POLL_SECONDS)
                continue
            # release first, then look again: a `queue add` that saw the lock held is picked up here;
            # the look waits for an enqueue under way, which may have started this very scheduler for
            # the rows it is writing (``enqueue_and_start``)
            os.close(fd)
            fd = None
            with file_lock(runs_dir / ENQUEUE_LOCK):
                idle = not scheduler.busy()
            if idle:
                log("queue empty and nothing launched is alive; exiting")
                return 0
            fd = try_lock(lock_path(runs_dir))
            if fd is None:
                return 0
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        sys.stderr.write("usage: python -m mdtui.scheduling.scheduler RUNS_DIR [EXPERIMENTS_TOML]\n")
        return 2
    runs_dir = Path(args[0]).expanduser().resolve()
    experiments = Path(args[1]).expanduser().resolve() if len(args) == 2 and args[1] else None
    return run_scheduler(runs_dir, experiments)


if __name__ == "__main__":
    sys.exit(main())
