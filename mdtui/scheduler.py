"""The scheduler: one detached process per runs directory that launches queued runs when devices fit.

``python -m mdtui.scheduler RUNS_DIR EXPERIMENTS_TOML`` is started on demand by ``ensure_scheduler``
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

from mdtui import gpus, ledger, runqueue
from mdtui.fsutil import read_json, try_lock
from mdtui.runqueue import QueueEntry, QueueError, entries, transition

if TYPE_CHECKING:
    from mdtui.experiments import Plan
    from mdtui.launcher import Launcher
    from mdtui.store import RunRecord, RunStore

__all__ = [
    "QueueEntry",
    "QueueError",
    "cancel",
    "enqueue",
    "ensure_scheduler",
    "move",
    "pause",
    "pick_devices",
    "queue_entries",
    "resume",
]

LOCK_NAME = "scheduler.lock"
LOG_NAME = "scheduler.log"
POLL_SECONDS = float(os.environ.get("MDTUI_SCHEDULER_POLL", "0.5"))
PLACEMENT_WINDOW = 120.0  # seconds after launch during which a run's GPU placement is checked
ORPHAN_GRACE = 5.0  # a claim older than this with no supervisor was left by a killed scheduler


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
    for unknown names and QueueError for device requests this machine can never meet.
    """
    from mdtui.experiments import select_experiments
    from mdtui.runprep import seeds_of

    exps = select_experiments(plan, names)
    policy = ledger.Policy.from_settings(plan.settings)
    snapshot = gpus_snapshot()
    for exp in exps:
        problem = ledger.never_fits(snapshot, policy, gpus or exp.gpus, devices)
        if problem:
            raise QueueError(f"{exp.name}: {problem}")
    records = []
    for exp in runqueue.expand_with_upstreams(store, plan, exps):
        count = gpus if gpus is not None and exp in exps else exp.gpus
        for seed in seeds_of(exp):
            records.append(runqueue.add(store, plan, exp, seed=seed, gpus=count, devices=devices))
    return records


def queue_entries(store: RunStore, *, include_launched: bool = True) -> list[QueueEntry]:
    return entries(store, include_launched=include_launched)


def cancel(store: RunStore, run_id: str, *, launcher: Launcher | None = None) -> str:
    """Cancel a queued run, or stop it if the scheduler already launched it; returns what happened."""
    entry = runqueue.find(store, run_id)
    if runqueue.cancel_waiting(store, entry.run_id):
        return "cancelled"
    if launcher is None:
        from mdtui.launcher import LocalLauncher

        launcher = LocalLauncher(store)
    runqueue.remove(store, entry.run_id)
    return "stopping" if launcher.cancel(entry.run_id) else "already finished"


def move(store: RunStore, run_id: str, position: int) -> int:
    return runqueue.move(store, runqueue.find(store, run_id).run_id, position)


def pause(store: RunStore) -> None:
    runqueue.set_state(store, "paused", str(time.time()))


def resume(store: RunStore) -> None:
    runqueue.set_state(store, "paused", None)


def is_paused(store: RunStore) -> bool:
    return runqueue.state(store, "paused") is not None


def gpus_snapshot() -> list[gpus.Device]:
    """``gpus.list_devices()``; a broken fake description reads as "no GPU facts" (CPU only)."""
    try:
        return gpus.list_devices()
    except gpus.GpuConfigError:
        return [gpus.cpu_device()]


def reservations(store: RunStore) -> list[ledger.Reservation]:
    """Every live mdtui run holds its devices until its supervisor exits."""
    from mdtui.store import LIVE_STATUSES

    return [
        ledger.Reservation(r.run_id, tuple(r.devices)) for r in store.list_runs(statuses=list(LIVE_STATUSES))
    ]


def pick_devices(
    store: RunStore, plan: Plan, count: int, *, prefer: list[str] | None = None
) -> list[str] | None:
    """Devices for one more run now (ledger-aware), or None when they do not fit."""
    policy = ledger.Policy.from_settings(plan.settings)
    return ledger.pick(gpus_snapshot(), reservations(store), policy, count, candidates=prefer)


# --------------------------------------------------------------------------------------- ensure


def lock_path(runs_dir: Path) -> Path:
    return Path(runs_dir) / LOCK_NAME


def scheduler_running(runs_dir: Path | str) -> bool:
    fd = try_lock(lock_path(Path(runs_dir)))
    if fd is None:
        return True
    os.close(fd)
    return False


def has_work(store: RunStore) -> bool:
    """Something the scheduler must act on: a queued run, an unblockable run, or an unfinished claim."""
    for entry in entries(store):
        if entry.waiting and entry.status == "queued":
            return True
        if (
            entry.waiting
            and entry.status == "blocked"
            and runqueue.needs_state(store, entry.needs)[0] != "blocked"
        ):
            return True
        if not entry.waiting and entry.status in ("starting", "running"):
            return True
    return False


def ensure_scheduler(runs_dir: Path | str, experiments: Path | str | None = None) -> int | None:
    """Start the detached scheduler if the queue has work and none holds the lock; its pid, else None."""
    from mdtui.store import DB_NAME, RunStore

    runs_dir = Path(runs_dir).expanduser().resolve()
    if not (runs_dir / DB_NAME).exists():
        return None
    store = RunStore(runs_dir)
    if not has_work(store) or scheduler_running(runs_dir):
        return None
    toml = experiments or runqueue.state(store, "experiments") or ""
    with open(runs_dir / LOG_NAME, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mdtui.scheduler", str(runs_dir), str(toml)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the terminal and the command that started it
            close_fds=True,
        )
    _STARTED.append(proc)  # keep the handle so the child is reaped here, not left a zombie
    return proc.pid


_STARTED: list[subprocess.Popen[bytes]] = []


# --------------------------------------------------------------------------------------- the process


def log(msg: str) -> None:
    sys.stdout.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [scheduler {os.getpid()}] {msg}\n")
    sys.stdout.flush()


class Scheduler:
    def __init__(self, store: RunStore, experiments: Path | None, launcher: Launcher | None = None) -> None:
        from mdtui.launcher import LocalLauncher

        self.store = store
        self.experiments = experiments
        self.launcher = launcher or LocalLauncher(store)
        self.policy = ledger.Policy()
        self._plan_mtime: float | None = None
        self.launched: dict[str, float] = {}  # run id -> launch time (placement checks)

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
        from mdtui.experiments import ExperimentsError, load_plan

        try:
            self.policy = ledger.Policy.from_settings(load_plan(self.experiments).settings)
            log(f"policy: {self.policy}")
        except ExperimentsError as exc:
            log(f"{self.experiments} has errors; keeping the previous policy:\n{exc}")

    # ------------------------------------------------------------ reconciliation

    def recover_orphan_claims(self) -> None:
        """Runs claimed (``starting``) by a scheduler that died before their supervisor started go back
        to the queue; a supervisor that did start is left alone (it records itself)."""
        now = time.time()
        for entry in entries(self.store):
            if entry.waiting or entry.status != "starting" or entry.run_id in self.launched:
                continue
            rec = self.store.get(entry.run_id)
            if (
                rec is None
                or rec.supervisor_pid is not None
                or now - (entry.launched_t or now) < ORPHAN_GRACE
            ):
                continue
            if supervisor_process(rec.run_dir) is not None:
                continue
            if transition(self.store, rec.run_id, ("starting",), status="queued", devices=[], started_t=None):
                runqueue.unmark_launched(self.store, rec.run_id)
                log(f"{rec.run_id}: claimed by a scheduler that died before launching it; back in the queue")

    def reconcile(self) -> None:
        self.recover_orphan_claims()
        for rec in self.store.refresh():
            log(f"{rec.run_id} ({rec.experiment}) reconciled: {rec.status}")
        for entry in entries(self.store):
            if not entry.waiting:
                if entry.status not in ("starting", "running"):
                    runqueue.remove(self.store, entry.run_id)
                    self.launched.pop(entry.run_id, None)
                continue
            if entry.status in ("starting", "running"):  # launched, but the entry was not marked
                runqueue.mark_launched(self.store, entry.run_id)
                continue
            if entry.status not in ("queued", "blocked"):  # cancelled or finished behind our back
                runqueue.remove(self.store, entry.run_id)
                continue
            state, reason = runqueue.needs_state(self.store, entry.needs)
            if state == "blocked" and entry.status == "queued":
                if transition(self.store, entry.run_id, ("queued",), status="blocked", error=reason):
                    log(f"{entry.run_id} ({entry.experiment}) blocked: {reason}")
            elif (
                state != "blocked"
                and entry.status == "blocked"
                and transition(self.store, entry.run_id, ("blocked",), status="queued", error=None)
            ):
                log(f"{entry.run_id} ({entry.experiment}) unblocked")
            if state != "ready":
                runqueue.set_reason(self.store, entry.run_id, reason)

    # ------------------------------------------------------------ launching

    def launch_ready(self) -> None:
        if is_paused(self.store):
            for entry in entries(self.store, include_launched=False):
                if entry.status == "queued":
                    runqueue.set_reason(
                        self.store, entry.run_id, "the queue is paused (`mdtui queue resume`)"
                    )
            return
        devices = gpus_snapshot()
        for entry in entries(self.store, include_launched=False):
            if entry.status != "queued" or runqueue.needs_state(self.store, entry.needs)[0] != "ready":
                continue
            held = reservations(self.store)
            chosen = ledger.pick(
                devices, held, self.policy, entry.gpus, candidates=list(entry.devices or ()) or None
            )
            if chosen is None:
                runqueue.set_reason(
                    self.store, entry.run_id, waiting_reason(devices, held, self.policy, entry)
                )
                continue
            self.launch(entry, chosen)

    def launch(self, entry: QueueEntry, devices: list[str]) -> None:
        # the conditional claim: only one process ever moves a run from queued to starting
        if not runqueue.claim(self.store, entry.run_id, devices):
            return
        self.launched[entry.run_id] = time.monotonic()
        rec = self.store.get(entry.run_id)
        assert rec is not None
        try:
            resolve_dependencies(self.store, rec, entry.needs)
            self.launcher.submit(entry.run_id, devices)
        except Exception as exc:  # a broken run must not stop the queue
            log(f"{entry.run_id}: launch failed: {exc}")
            self.store.update(
                entry.run_id, status="failed", ended_t=time.time(), error=f"launch failed: {exc}"
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
            if (
                rec is None
                or rec.status not in ("starting", "running")
                or now - launched_at > PLACEMENT_WINDOW
            ):
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
        """Queued work remains, or a run this queue launched is still alive."""
        return any(
            (e.waiting and e.status == "queued") or (not e.waiting and e.status in ("starting", "running"))
            for e in entries(self.store)
        )

    def step(self) -> None:
        self.reload_policy()
        self.reconcile()
        self.launch_ready()
        self.check_placement()


def waiting_reason(
    devices: list[gpus.Device], held: list[ledger.Reservation], policy: ledger.Policy, entry: QueueEntry
) -> str:
    """Why ``entry`` cannot start now, device by device (excluded devices are not worth a word)."""
    counts = ledger.reservation_counts(held)
    wanted = [d for d in devices if not entry.devices or any(ledger.matches(d, s) for s in entry.devices)]
    notes, free = [], []
    for device in wanted:
        why = ledger.blocker(device, policy, counts)
        if why is None:
            free.append(device.id)
        elif not why.startswith("excluded"):
            notes.append(f"{device.id}: {why}")
    if free and policy.max_devices is not None:
        mine = ",".join(sorted(ledger.user_devices(devices, counts)))
        notes.append(f"max_devices = {policy.max_devices} reached (holding {mine})")
    need = f"{entry.gpus} device{'s' if entry.gpus > 1 else ''}"
    return f"waiting for {need}" + (f" ({'; '.join(notes)})" if notes else "")


def resolve_dependencies(store: RunStore, rec: RunRecord, needs: tuple[str, ...]) -> None:
    """Fill the upstream's checkpoint (and combined masks) into config.json, as `mdtui run` would."""
    from types import SimpleNamespace

    from mdtui.fsutil import atomic_write_json
    from mdtui.runprep import combine_path, upstream_checkpoint

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


def supervisor_process(run_dir: Path) -> int | None:
    """The pid of a live `python -m mdtui.supervise RUN_DIR`, found by its command line."""
    import psutil

    target = str(run_dir)
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "mdtui.supervise" in cmd and target in cmd:
            return proc.pid
    return None


def run_scheduler(runs_dir: Path, experiments: Path | None) -> int:
    """The scheduler's main loop; returns when another holds the lock or the queue has drained."""
    from mdtui.store import RunStore

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
            # release first, then look again: a `queue add` that saw the lock held is picked up here
            os.close(fd)
            fd = None
            if not scheduler.busy():
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
        sys.stderr.write("usage: python -m mdtui.scheduler RUNS_DIR [EXPERIMENTS_TOML]\n")
        return 2
    runs_dir = Path(args[0]).expanduser().resolve()
    experiments = Path(args[1]).expanduser().resolve() if len(args) == 2 and args[1] else None
    return run_scheduler(runs_dir, experiments)


if __name__ == "__main__":
    sys.exit(main())
