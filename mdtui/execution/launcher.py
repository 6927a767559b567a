"""The local backend: each run under its own detached supervisor on this machine (docs/queue.md).

``LocalLauncher`` honours the ``Launcher`` protocol (``mdtui.execution.launching``) as the Slurm
backend does; callers get it from ``mdtui.execution.backends``. What only a local machine can do
stays inside it: place a new run with the ledger in one atomic step (``places_devices``), reach the
process group of a run whose supervisor died (a stop of an ``orphan``), and wait for a supervisor.

The stop grace comes from ``[settings] stop_grace_seconds`` (``stop_grace``), whose default is the
one in ``mdtui.registry.spec.STOP_GRACE_SECONDS``; CPU-thread splitting comes from ``[settings]
runs_per_device`` and the run's process count (``mdtui.execution.ranks``) through ``submit``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mdtui.execution import ledger, ranks, supervise
from mdtui.execution.ending import end_unstarted
from mdtui.execution.launching import Launcher, LaunchError, LaunchRefused, NoDevice, StopTarget
from mdtui.execution.reconcile import reconcile
from mdtui.registry.spec import STOP_GRACE_SECONDS
from mdtui.runs.prepare import create_run_for
from mdtui.runs.status import LIVE, RunStatus
from mdtui.system.fs import atomic_write_json
from mdtui.system.gpus import CPU_ID

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunRecord, RunStore

DEFAULT_STOP_GRACE: float = STOP_GRACE_SECONDS
EXIT_FILE = supervise.EXIT_FILE
STOP_REQUEST = supervise.STOP_REQUEST
SUPERVISOR_MODULE = supervise.__name__  # `python -m mdtui.execution.supervise RUN_DIR`
ORPHAN_POLL_SECONDS = 0.1


def stop_grace(settings: object | None) -> float:
    """Seconds between SIGTERM and SIGKILL: ``[settings] stop_grace_seconds``, else its default."""
    value = getattr(settings, "stop_grace_seconds", None)
    return float(value) if value is not None else DEFAULT_STOP_GRACE


__all__ = ["Launcher", "LaunchError", "LaunchRefused", "LocalLauncher", "NoDevice", "stop_grace"]


class LocalLauncher:
    """Runs on this machine under `mdtui.execution.supervise`, one detached supervisor per run."""

    name = "local"
    queues_itself = False  # mdtui's queue and ledger decide when and where a run starts
    places_devices = True

    def __init__(
        self, store: RunStore, *, grace: float = DEFAULT_STOP_GRACE, policy: ledger.Policy | None = None
    ) -> None:
        self.store = store
        self.grace = grace
        self.policy = policy or ledger.Policy()

    @classmethod
    def for_plan(cls, store: RunStore, plan: Plan | None) -> LocalLauncher:
        """A launcher with the plan's policies and stop grace (defaults without a plan)."""
        launcher = cls(store)
        if plan is not None:
            launcher.configure(plan.settings)
        return launcher

    def configure(self, settings: object) -> None:
        """Take ``[settings]`` (policies, grace), e.g. after experiments.toml changed."""
        self.policy = ledger.Policy.from_settings(settings)
        self.grace = stop_grace(settings)

    @property
    def runs_per_device(self) -> int:
        return self.policy.runs_per_device

    # ------------------------------------------------------------ the protocol

    def submit(self, run_id: str, devices: list[str]) -> RunRecord:
        """Start the supervisor of a run whose devices are reserved (its pid: ``supervisor_pid``).
        A supervisor that cannot be started ends the run ``failed`` (``LaunchError``)."""
        rec = self.store.get(run_id)
        processes = ranks.run_process_count(Path(rec.run_dir), devices) if rec is not None else 1
        env = supervise.cpu_threads_env(list(devices), self.policy.runs_per_device, processes)
        # a supervisor that itself receives SIGTERM gives the engine the same grace as `mdtui stop`
        env["MDTUI_STOP_GRACE"] = f"{self.grace:g}"
        try:
            supervise.launch(self.store, run_id, devices=list(devices), env=env)
        except OSError as exc:  # the devices are reserved: never leave the run holding them
            end_unstarted(self.store, run_id, RunStatus.FAILED, f"launch failed: {exc}")
            raise LaunchError(f"run {run_id}: launch failed: {exc}") from exc
        return self.store.get(run_id) or rec  # type: ignore[return-value]

    def poll(self, run_id: str) -> str:
        record = self.store.get(run_id)
        if record is None:
            return RunStatus.LOST.value
        if record.status in LIVE:
            # reconcile checks pid + start-time identity and finalises dead runs
            reconcile(self.store)
            record = self.store.get(run_id) or record
        return record.status

    def stop_target(self, rec: RunRecord) -> StopTarget | None:
        """A live run is stopped through its supervisor; a ``lost`` run whose engine is still alive
        is stopped here (nobody else would). A run in mdtui's queue is cancelled, not stopped."""
        if rec.live:
            return StopTarget.LIVE
        if rec.status == RunStatus.LOST and ledger.engine_alive(rec):
            return StopTarget.ORPHAN
        return None

    def stop(self, run_id: str, *, wait: bool = False, grace: float | None = None) -> bool:
        """SIGTERM to the engine's group, SIGKILL after the grace."""
        grace = self.grace if grace is None else grace
        rec = self.store.get(run_id)
        if rec is None:
            raise LookupError(f"no run {run_id}")
        target = self.stop_target(rec)
        if target == StopTarget.LIVE:
            return bool(supervise.stop(self.store, run_id, grace=grace, wait=wait))
        if target == StopTarget.ORPHAN:
            return self._stop_orphan(rec, grace)
        return False

    def kill(self, run_id: str) -> bool:
        return self.stop(run_id, grace=0.0)

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Until the run's supervisor has exited (it writes the results log before it does)."""
        rec = self.store.get(run_id)
        if rec is None or rec.supervisor_pid is None:
            return True
        return supervise.wait_supervisor(rec.supervisor_pid, timeout=timeout)

    def where(self, run_id: str) -> tuple[str, list[str]]:
        record = self.store.get(run_id)
        return socket.gethostname(), list(record.devices) if record else []

    # ------------------------------------------------------------ placing new runs

    def start_new(
        self,
        plan: Plan,
        exp: Experiment,
        *,
        seed: int,
        devices: list[str] | None = None,
        cpu_always: bool = True,
    ) -> RunRecord:
        """Create a run of ``exp`` on free devices and start it; its record (``supervisor_pid`` set).

        Picking the devices, creating the run and marking it ``starting`` happen under the ledger
        lock, so concurrent launches never share a device. ``devices`` (``--device``) are taken as
        given unless mdtui runs already fill them. ``cpu_always``: the CLI runs on the CPU whatever
        else runs there (the runs split its cores); the TUI queues instead. Raises ``NoDevice`` when
        nothing fits and ``RunSetupError`` when the run cannot be prepared.
        """
        count = max(1, exp.gpus)
        created: list[RunRecord] = []

        def claim(chosen: list[str]) -> bool:
            rec = create_run_for(plan, self.store, exp, seed=seed, devices=chosen)
            self.store.update(rec.run_id, status=RunStatus.STARTING.value, started_t=time.time())
            created.append(rec)
            return True

        explicit = devices
        if explicit is None and cpu_always and not _has_gpus():
            explicit = [CPU_ID]
        if explicit == [CPU_ID] and cpu_always:
            claim([CPU_ID])  # the CPU is shared by nature: no reservation to respect
            chosen: list[str] | None = [CPU_ID]
        else:
            chosen = ledger.reserve(self.store, self.policy, count, claim, explicit=explicit)
        if chosen is None:
            raise NoDevice(self._no_device_message(exp, count, explicit))
        rec = created[0]
        return self.submit(rec.run_id, chosen)

    def _no_device_message(self, exp: Experiment, count: int, explicit: list[str] | None) -> str:
        held = ledger.reservations(self.store)
        if explicit is not None:
            full = ledger.over_capacity(explicit, held, self.policy)
            holders = sorted({r.run_id for r in held if set(r.devices) & set(full)})
            return (
                f"device {','.join(full)} is reserved by mdtui run {', '.join(holders)} "
                f"(runs_per_device = {self.policy.runs_per_device}); "
                f'queue it (`mdtui queue add "{exp.name}" --device {",".join(explicit)}`) to start when it frees up'
            )
        why = ledger.waiting_reason(ledger.gpus_snapshot(), held, self.policy, count)
        return (
            f'no free device for "{exp.name}" right now ({why}); pick one with --device, or queue it '
            f'(`mdtui queue add "{exp.name}"`) to start when one frees up'
        )

    # ------------------------------------------------------------ resuming

    def resume(self, rec: RunRecord, devices: list[str] | None = None) -> RunRecord:
        """Relaunch a stopped / failed / lost run in its own directory with ``--resume``.

        Refused (``LaunchRefused``) while the run is live, while its old engine is still alive (two
        engines would write one directory), when it completed, or without ``checkpoints/last.pt``.
        The devices (``devices``, else the run's own, else any that fit) are reserved atomically.
        """
        self._check_resumable(rec)
        claimed: list[str] = []

        def claim(chosen: list[str]) -> bool:
            current = self.store.get(rec.run_id)
            if current is None or current.live or ledger.engine_alive(current):
                return False  # a concurrent resume got there first
            self.store.update(  # job_id: a run Slurm once ran is a local run from here on
                rec.run_id,
                status=RunStatus.STARTING.value,
                devices=chosen,
                started_t=time.time(),
                job_id=None,
                job_state=None,
            )
            claimed.extend(chosen)
            return True

        own = devices or list(rec.devices or [CPU_ID])
        if own == [CPU_ID]:
            with ledger.locked(self.store):  # the CPU is shared: only a concurrent resume can stop this
                claim(own)
        else:
            ledger.reserve(self.store, self.policy, len(own), claim, explicit=own)
            if not claimed and devices is None and not (self.store.get(rec.run_id) or rec).live:
                # its old devices are taken: any that fit will do (CUDA_VISIBLE_DEVICES renumbers them)
                ledger.reserve(self.store, self.policy, len(own), claim)
        if not claimed:
            current = self.store.get(rec.run_id) or rec
            if current.live:
                raise LaunchRefused(
                    f"run {rec.run_id} is already {current.status} (resumed by another command)"
                )
            raise NoDevice(
                f"run {rec.run_id} cannot resume now: device {','.join(own)} is reserved by another "
                "mdtui run and no other device fits; pick one with --device, or wait"
            )
        run_dir = Path(rec.run_dir)
        for name in (EXIT_FILE, STOP_REQUEST):  # the old ending must not be read as the new one
            if (run_dir / name).exists():
                (run_dir / name).replace(run_dir / f"{name}.prev")
        self.store.update_run_json(run_dir, {"resume": True})
        return self.submit(rec.run_id, claimed)

    def _check_resumable(self, rec: RunRecord) -> None:
        if rec.live:
            raise LaunchRefused(f"run {rec.run_id} ({rec.experiment}) is still {rec.status}; stop it first")
        if ledger.engine_alive(rec):
            raise LaunchRefused(
                f"run {rec.run_id} ({rec.experiment}) is {rec.status} but its engine (pid {rec.pid}) is "
                f"still running; stop it with `mdtui stop {rec.run_id}`, then resume"
            )
        if rec.status == RunStatus.COMPLETED:
            raise LaunchRefused(f"run {rec.run_id} ({rec.experiment}) already completed; nothing to resume")
        if not (Path(rec.run_dir) / "checkpoints" / "last.pt").is_file():
            raise LaunchRefused(
                f"run {rec.run_id} has no checkpoints/last.pt to resume from; start a new run instead"
            )

    # ------------------------------------------------------------ runs whose supervisor died

    def _stop_orphan(self, rec: RunRecord, grace: float) -> bool:
        """SIGTERM to a lost run's engine group, SIGKILL after ``grace``; waits here, since no
        supervisor is left to escalate. Identity (pid + start time + boot id) is checked before
        every signal."""
        atomic_write_json(
            Path(rec.run_dir) / STOP_REQUEST, {"t": time.time(), "grace": float(grace), "by_pid": os.getpid()}
        )
        pgid = rec.pgid or rec.pid
        assert pgid is not None  # engine_alive() said so
        # the ranks of a multi-process run are in sessions of their own: torchrun forwards the
        # SIGTERM to them, but once torchrun is gone they are signalled one by one
        left = ranks.recorded_ranks(Path(rec.run_dir))
        if not supervise.signal_group(pgid, signal.SIGTERM) and not ranks.signal_ranks(left, signal.SIGTERM):
            return False
        deadline = time.monotonic() + grace
        while ledger.engine_alive(rec) and time.monotonic() < deadline:
            time.sleep(ORPHAN_POLL_SECONDS)
        if ledger.engine_alive(rec):
            supervise.signal_group(pgid, signal.SIGKILL)
            ranks.signal_ranks(left, signal.SIGKILL)
        return True


def find_supervisor(run_dir: Path) -> int | None:
    """The pid of a live supervisor of ``run_dir`` found by its command line (for a claim whose
    supervisor never recorded itself)."""
    import psutil

    target = str(run_dir)
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if SUPERVISOR_MODULE in cmd and target in cmd:
            return proc.pid
    return None


def _has_gpus() -> bool:
    return any(not d.is_cpu for d in ledger.gpus_snapshot())
