"""The per-run supervisor: the process that owns one engine run and decides its final status.

``launch`` starts ``python -m mdtui.execution.supervise RUN_DIR`` in its own session (stdin from /dev/null,
output appended to the run's log files, never a pipe), so the run outlives the terminal, the SSH
session and the UI that started it. The supervisor starts ``python -m engine RUN_DIR`` in a process
group of its own, records pid / pgid / start time, waits, and records the end through
``mdtui.execution.ending`` (which decides the status and writes exit.json last, docs/results.md):

* ``completed``: exit 0 after a ``run_finished{completed}`` event;
* ``stopped``: mdtui asked for the stop (``stop()`` writes ``stop-request.json`` before signalling);
* ``failed``: any other end (non-zero exit, a signal mdtui did not send, no ``run_finished``).

The engine ends with its supervisor: on Linux it is started with the parent-death signal set to
SIGTERM (``prctl(PR_SET_PDEATHSIG)``), so a supervisor killed by ``kill -9`` or the OOM killer makes
its engine stop as if asked (finish the step, save ``last.pt``) instead of training unobserved.

A run of N > 1 processes (``mdtui.execution.ranks``: ``distributed.processes``, or one per GPU) is
started as ``python -m torch.distributed.run --standalone --nproc-per-node N -m engine RUN_DIR``:
torchrun is then "the engine process" (its group is signalled on a stop; torchrun forwards SIGTERM
to the ranks). torchrun puts each rank in a session of its own, so the supervisor records the ranks
in run.json as they appear, sends the SIGKILL escalation to them as well, and after torchrun exits
waits for (then kills) whatever is left of them before it records the end. A failed run's reason
names the failing rank and its last stderr lines.

``MDTUI_ENGINE_CMD`` (a shell-quoted command, e.g. ``python tests/fixtures/fake_engine.py``) replaces
``python -m engine``; the run directory (and ``--resume``) are appended. Tests use it. For N > 1
its first word (the interpreter) gives way to torchrun, which runs the rest (a script or ``-m
module``) in every rank.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mdtui.execution import ranks, slurm_job
from mdtui.execution.ending import SLURM_TERM, STOP_REQUEST, decide, engine_end_from_events, settle
from mdtui.execution.node_store import RunDirStore
from mdtui.registry.spec import STOP_GRACE_SECONDS
from mdtui.runs.rundir import EXIT_FILE, RunEvents, metrics_from_state
from mdtui.runs.status import RunStatus
from mdtui.runs.store import RunStore
from mdtui.system.fs import atomic_write_json, read_json
from mdtui.system.gpus import cuda_visible_devices
from mdtui.system.processes import boot_id, process_alive, process_start_time

__all__ = ["EXIT_FILE", "STOP_REQUEST"]  # re-exported: where callers have always found them
PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_SECONDS = 0.2
PROGRESS_SECONDS = 2.0
DEFAULT_GRACE = STOP_GRACE_SECONDS  # the supervisor's own, when no stop request names one
STDERR_TAIL_LINES = 6
LOG_PREFIX = "[mdtui.execution.supervise]"

# Popen objects of supervisors this process launched, kept so that they are reaped by us
# (``wait_supervisor``) and never by the garbage collector behind our back.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- launching side


def engine_command(run_dir: Path, *, resume: bool = False, processes: int = 1) -> list[str]:
    """The engine command line for ``run_dir`` (``MDTUI_ENGINE_CMD`` overrides ``python -m engine``);
    torchrun starting ``processes`` ranks of it when ``processes`` > 1."""
    override = os.environ.get("MDTUI_ENGINE_CMD", "").strip()
    base = shlex.split(override) if override else [sys.executable, "-m", "engine"]
    if processes > 1:
        base = ranks.torchrun_command(base[1:], processes)
    return [*base, str(run_dir), *(["--resume"] if resume else [])]


def cuda_env(devices: list[str]) -> dict[str, str]:
    """The child's CUDA variables: PCI bus order and exactly the devices handed to it, by UUID ("" for
    cpu). An inherited CUDA_VISIBLE_DEVICES (a Slurm or container allocation) is replaced, not
    nested: its devices are the ones mdtui lists and hands out, and a UUID needs no renumbering."""
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": cuda_visible_devices(devices)}


def cpu_threads_env(devices: list[str], runs_sharing: int, processes: int = 1) -> dict[str, str]:
    """Split the CPU between runs that share it, and between a run's ranks: torch's default of one
    thread per core in every process makes concurrent CPU runs oversubscribe the machine and crawl
    (measured: ~20x slower). torchrun would set 1 thread per rank when nothing is set."""
    if (runs_sharing <= 1 and processes <= 1) or any(d and d != "cpu" for d in devices):
        return {}
    threads = max(1, (os.cpu_count() or 1) // (max(1, runs_sharing) * max(1, processes)))
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def launch(store: RunStore, run_id: str, *, devices: list[str], env: dict[str, str] | None = None) -> int:
    """Start the detached supervisor of ``run_id`` on ``devices``; return its pid."""
    rec = store.get(run_id)
    if rec is None:
        raise LookupError(f"no run {run_id}")
    run_dir = rec.run_dir
    store.begin_attempt(run_id, status=RunStatus.STARTING.value, devices=list(devices), started_t=time.time())
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(run_dir / "stdout.log", "ab") as out, open(run_dir / "stderr.log", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mdtui.execution.supervise", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
            env=child_env,
        )
    _CHILDREN[proc.pid] = proc
    start = process_start_time(proc.pid)
    if start is not None:
        store.update(run_id, supervisor_pid=proc.pid, supervisor_start=start, boot_id=boot_id())
    return proc.pid


def wait_supervisor(pid: int, timeout: float | None = None) -> bool:
    """Wait for a supervisor pid (ours or not) to exit; True when it has."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        _CHILDREN.pop(pid, None)
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    start = process_start_time(pid)
    while start is not None and process_alive(pid, start):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def supervisor_done(pid: int | None) -> bool:
    """Non-blocking: has the supervisor ``pid`` exited (reaping it when it is our child)?"""
    if pid is None:
        return True
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return False
        _CHILDREN.pop(pid, None)
        return True
    return process_start_time(pid) is None


def stop(store: RunStore, run_id: str, *, grace: float = DEFAULT_GRACE, wait: bool = False) -> bool:
    """Ask a live run to stop: SIGTERM to the engine's process group, SIGKILL after ``grace`` seconds.

    The stop request is written first, so the supervisor records ``stopped`` (not ``failed``) and
    does the escalation itself; this returns at once unless ``wait``. Returns False when the run has
    no live process to signal.
    """
    rec = store.get(run_id)
    if rec is None:
        raise LookupError(f"no run {run_id}")
    if not rec.live:
        return False
    engine_alive = process_alive(rec.pid, rec.proc_start, rec.boot_id)
    supervisor_alive = process_alive(rec.supervisor_pid, rec.supervisor_start, rec.boot_id)
    if not engine_alive and not supervisor_alive and rec.supervisor_pid is not None:
        # nothing to stop: no request either, or reconcile would call the vanished run "stopped"
        return False
    atomic_write_json(
        rec.run_dir / STOP_REQUEST, {"t": time.time(), "grace": float(grace), "by_pid": os.getpid()}
    )
    if engine_alive and rec.pgid:
        signal_group(rec.pgid, signal.SIGTERM)
    elif supervisor_alive and rec.supervisor_pid:
        # the engine has not started yet: the supervisor sees the request and never starts it
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.supervisor_pid, signal.SIGTERM)
    if (wait or not supervisor_alive) and engine_alive:
        # without a supervisor nobody else escalates: wait here
        _wait_then_kill(rec.pid, rec.proc_start, rec.pgid, grace)
        if not supervisor_alive:  # nor kills the ranks that torchrun left
            ranks.signal_ranks(ranks.recorded_ranks(rec.run_dir), signal.SIGKILL)
    if wait and supervisor_alive and rec.supervisor_pid:
        wait_supervisor(rec.supervisor_pid, timeout=grace + 30)
    return True


def _wait_then_kill(pid: int | None, start: float | None, pgid: int | None, grace: float) -> None:
    deadline = time.monotonic() + grace
    while process_alive(pid, start) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    if process_alive(pid, start) and pgid:
        signal_group(pgid, signal.SIGKILL)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group is gone or not ours."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the engine receive SIGTERM when its supervisor dies (Linux).

    The kernel delivers it however the supervisor ends (kill -9, the OOM killer), and for any
    engine command, so the engine stops gracefully (finishes its step, saves last.pt) instead of
    training unobserved; reconcile then records the run ``lost`` (resumable). Elsewhere: None.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        # Our SIGTERM handler is inherited until exec: a parent-death signal caught by it would be
        # lost at exec. With the default action such a signal ends the not-yet-engine at once.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before the signal was armed
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------- the supervisor process


def log(msg: str) -> None:
    """A line in the run's stderr.log (the supervisor's stderr)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stderr.write(f"{LOG_PREFIX} {stamp} {msg}\n")
    sys.stderr.flush()


class Supervisor:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.run_id = run_dir.name
        info = read_json(run_dir / "run.json") or {}
        # the experiments file lets the results log find the run's group baseline; inside a Slurm job
        # the supervisor writes its run directory only, never the index (mdtui.execution.node_store)
        experiments = info.get("experiments_file") or None
        self.store: RunStore | RunDirStore = (
            RunDirStore(run_dir, experiments)
            if slurm_job.active()
            else RunStore(run_dir.parent.parent, experiments_file=experiments)
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.term_received = False
        self.killed = False
        self.term_sent_t: float | None = None  # when this supervisor sent the engine its SIGTERM
        self.events = RunEvents(run_dir, self.run_id)
        self.state = self.events.state
        self.processes = 1  # torchrun starts the engine's ranks when > 1
        self.ranks: list[ranks.RankProcess] = []  # seen so far (each in a session of its own)
        self.stderr_offset = 0  # the logs' sizes at the start: this attempt's lines come after
        self.rank_offsets: dict[int, int] = {}

    # ------------------------------------------------------------ signals

    def _on_term(self, signum: int, frame: Any) -> None:
        # only a flag: the main loop (which sleeps at most POLL_SECONDS) does the work
        self.term_received = True

    def _asked(self) -> dict[str, Any] | None:
        """The stop request mdtui (or, locally, a plain SIGTERM to this supervisor) wrote."""
        data = read_json(self.run_dir / STOP_REQUEST)
        return data if isinstance(data, dict) else None

    def _slurm_term(self) -> dict[str, Any] | None:
        """The record of a SIGTERM Slurm sent this attempt (the time-limit warning, a scancel or a
        requeue mdtui did not ask for); None outside a Slurm job."""
        data = read_json(self.run_dir / SLURM_TERM) if slurm_job.active() else None
        return data if isinstance(data, dict) else None

    def _stop_request(self) -> dict[str, Any] | None:
        """The stop this supervisor acts on (its grace, its escalation): mdtui's, else Slurm's."""
        return self._asked() or self._slurm_term()

    def _handle_term(self) -> None:
        """A SIGTERM to the supervisor is a stop request too (e.g. `kill <supervisor pid>`)."""
        self.term_received = False
        grace = float(os.environ.get("MDTUI_STOP_GRACE", DEFAULT_GRACE))
        if slurm_job.active():
            # a TERM mdtui did not send is the time-limit warning or someone's scancel / requeue;
            # recorded in a file of its own, so a request mdtui writes at the same moment stays
            if self._slurm_term() is None:
                by = slurm_job.term_origin()
                atomic_write_json(self.run_dir / SLURM_TERM, {"t": time.time(), "grace": grace, "by": by})
        elif self._asked() is None:
            atomic_write_json(self.run_dir / STOP_REQUEST, {"t": time.time(), "grace": grace, "by": "signal"})
        self._term_engine()

    def _term_engine(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            log(f"stop requested: SIGTERM to engine group {self.proc.pid}")
            signal_group(self.proc.pid, signal.SIGTERM)
            if self.term_sent_t is None:
                self.term_sent_t = time.time()

    def _escalate(self, request: dict[str, Any]) -> None:
        if self.killed or self.proc is None or self.proc.poll() is not None:
            return
        if self.term_sent_t is None:
            # a stop request is a stop even when its signal never came (under Slurm mdtui's scancel
            # fails while the controller is down): SIGTERM first, SIGKILL only after the grace
            self._term_engine()
        t = max(float(request.get("t") or time.time()), self.term_sent_t or time.time())
        grace = float(request.get("grace") if request.get("grace") is not None else DEFAULT_GRACE)
        if time.time() >= t + grace:
            log(f"the engine did not stop within {grace:g}s: SIGKILL to group {self.proc.pid}")
            if self.processes > 1:
                self._track_ranks()  # those started since the last look, while torchrun can tell
            signal_group(self.proc.pid, signal.SIGKILL)
            self._signal_ranks(signal.SIGKILL)
            self.killed = True

    # ------------------------------------------------------------ ranks (torchrun)

    def _track_ranks(self) -> None:
        """Record the ranks torchrun has started (run.json ``ranks``): they are in sessions of their
        own, so only this list lets the supervisor and the ledger reach them once torchrun is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        # a child without a RANK is dropped once torchrun no longer has it (ranks.merge_sightings)
        seen = ranks.merge_sightings(self.ranks, ranks.find_ranks(self.proc.pid))
        if seen != self.ranks:
            self.ranks = seen
            self.store.update_run_json(self.run_dir, {ranks.RANKS_KEY: [r.to_json() for r in self.ranks]})

    def _signal_ranks(self, sig: int) -> None:
        hit = ranks.signal_ranks(self.ranks, sig)
        if hit:
            log(f"{signal.Signals(sig).name} to rank{'s' if len(hit) > 1 else ''} {_rank_names(hit)}")

    def _end_ranks(self, grace: float) -> None:
        """torchrun has exited: ranks it left (it was killed) got the parent-death SIGTERM and are
        stopping; wait ``grace`` seconds for them, then kill them and their data-loader workers, so
        that nothing of the run writes after its end is recorded."""
        deadline = time.monotonic() + grace
        while any(ranks.group_alive(r.pid, r.start) for r in self.ranks):
            if self.killed or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        self._signal_ranks(signal.SIGKILL)
        deadline = time.monotonic() + 10.0  # SIGKILL takes effect promptly; do not wait forever
        while any(ranks.group_alive(r.pid, r.start) for r in self.ranks) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)

    def _grace(self) -> float:
        request = self._stop_request() or {}
        if request.get("grace") is not None:
            return float(request["grace"])
        return float(os.environ.get("MDTUI_STOP_GRACE", DEFAULT_GRACE))

    # ------------------------------------------------------------ run

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        me = os.getpid()
        self.store.update(
            self.run_id, supervisor_pid=me, supervisor_start=process_start_time(me), boot_id=boot_id()
        )
        if slurm_job.active():  # inside an sbatch job: Slurm's devices; a rerun of the job resumes
            slurm_job.prepare(self.store, self.run_id, self.run_dir)
        info = read_json(self.run_dir / "run.json") or {}
        if self._stop_request() is not None or self.term_received:
            log("stop requested before the engine started; not starting it")
            return self._finish(exit_code=None, sig=None, stop_requested=True)
        cmd, env = self._engine_command(info)
        log(f"starting {shlex.join(cmd)} (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r})")
        try:
            with (
                open(self.run_dir / "stdout.log", "ab") as out,
                open(self.run_dir / "stderr.log", "ab") as err,
            ):
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group: a stop signals the whole group
                    close_fds=True,
                    env=env,
                    preexec_fn=die_with_parent(os.getpid()),
                )
        except OSError as exc:
            log(f"cannot start the engine: {exc}")
            return self._finish(exit_code=None, sig=None, error=f"cannot start the engine: {exc}")
        pid = self.proc.pid
        self.store.update(
            self.run_id,
            status=RunStatus.RUNNING.value,
            pid=pid,
            pgid=pid,
            proc_start=process_start_time(pid),
            started_t=time.time(),
        )
        # the ranks of an earlier attempt are not this one's
        self.store.update_run_json(
            self.run_dir, {"command": cmd, "processes": self.processes, ranks.RANKS_KEY: []}
        )
        self._wait()
        rc = self.proc.returncode
        # leftovers of the engine's group (data-loader workers) must not outlive the run
        signal_group(pid, signal.SIGKILL)
        if self.processes > 1:
            self._end_ranks(self._grace())
        sig = -rc if rc is not None and rc < 0 else None
        return self._finish(exit_code=rc, sig=sig, stop_requested=self._stop_request() is not None)

    def _engine_command(self, info: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The engine's command line and environment (torchrun for N > 1 processes); notes where
        this attempt's lines start in the logs, so a failure reads its own."""
        devices = [str(d) for d in info.get("devices") or ["cpu"]]
        self.processes = ranks.run_process_count(self.run_dir, devices)
        cmd = engine_command(self.run_dir, resume=bool(info.get("resume")), processes=self.processes)
        cmd = slurm_job.multi_node_command(self.run_dir, resume=bool(info.get("resume"))) or cmd
        # inside a Slurm job the inherited CUDA_VISIBLE_DEVICES is what Slurm granted: kept as it is
        gpu_env = {} if slurm_job.active() else cuda_env(devices)
        env = {**os.environ, **gpu_env, "PYTHONUNBUFFERED": "1"}
        env.pop("MDTUI_ENGINE_CMD", None)
        self.stderr_offset = ranks.file_size(self.run_dir / "stderr.log")
        self.rank_offsets = ranks.log_sizes(self.run_dir)
        return cmd, env

    def _wait(self) -> None:
        assert self.proc is not None
        last_progress = 0.0
        epochs_seen = 0
        while self.proc.poll() is None:
            if self.processes > 1 and (
                len(self.ranks) < self.processes or any(r.rank is None for r in self.ranks)
            ):
                self._track_ranks()
            if self.term_received:
                self._handle_term()
            request = self._stop_request()
            if request is not None:
                self._escalate(request)
            now = time.monotonic()
            if now - last_progress >= PROGRESS_SECONDS:
                last_progress = now
                self._read_events()
                if self.state.epochs_done != epochs_seen:
                    epochs_seen = self.state.epochs_done
                    self._update_metrics()
            time.sleep(POLL_SECONDS)

    def _read_events(self) -> None:
        self.events.drain()
        self.state = self.events.state

    def _update_metrics(self) -> None:
        try:
            self.store.update(self.run_id, **metrics_from_state(self.state))
        except Exception as exc:  # progress is a nicety; never let it kill the watch
            log(f"could not update progress: {exc}")

    # ------------------------------------------------------------ the end

    def _finish(
        self,
        *,
        exit_code: int | None,
        sig: int | None,
        stop_requested: bool = False,
        error: str | None = None,
    ) -> int:
        self._read_events()
        end = engine_end_from_events(
            self.state,
            exit_code=exit_code,
            signal=sig,
            stop_requested=stop_requested,
            killed=self.killed,
            error=error,
            stderr_tail=stderr_tail(self.run_dir / "stderr.log"),
            rank_error=self._rank_error(exit_code),
            # a stop Slurm asked for, not mdtui; mdtui's request wins when both came (a stop that
            # raced a requeue ends stopped)
            term_by=None if self._asked() else slurm_job.term_by(self._slurm_term()),
        )
        ending = decide(end)
        # logged before the ending is written: exit.json is the last write into the run directory
        log(f"engine exited with {exit_code}; status {ending.status}")
        rec = self.store.get(self.run_id)
        if rec is None:  # the index lost the run (a reindex without its folder): nothing to record
            return 1
        settle(self.store, rec, ending, end, self.state)
        # a Slurm job's exit status is what --dependency=afterok reads: only a completed run is ok
        return slurm_job.job_exit_status(ending) if slurm_job.active() else 0

    def _rank_error(self, exit_code: int | None) -> str | None:
        """The failing rank and its error when torchrun reported one (runs of N > 1 processes)."""
        if self.processes <= 1 or exit_code in (None, 0):
            return None
        # the engine's own error (rank 0's run_finished) wins over its stderr lines
        engine_error = self.state.error if self.state.finished else None
        return ranks.failure_reason(
            self.run_dir, self.stderr_offset, self.rank_offsets, engine_error=engine_error
        )


def _rank_names(hit: list[ranks.RankProcess]) -> str:
    return ", ".join(f"{r.rank if r.rank is not None else '?'} (pid {r.pid})" for r in hit)


def stderr_tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last meaningful lines of the engine's stderr (the supervisor's own lines left out)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.startswith(LOG_PREFIX)]
    return " | ".join(kept[-lines:])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m mdtui.execution.supervise RUN_DIR\n")
        return 2
    run_dir = Path(args[0]).resolve()
    if not (run_dir / "run.json").is_file():
        sys.stderr.write(f"{run_dir}: not a run directory (no run.json)\n")
        return 2
    supervisor = Supervisor(run_dir)
    try:
        return supervisor.run()
    except Exception:
        log("supervisor error:\n" + traceback.format_exc())
        proc = supervisor.proc
        if proc is not None and proc.poll() is None:
            # the run itself is fine: keep watching it so its end is still recorded
            with contextlib.suppress(Exception):
                proc.wait()
                return supervisor._finish(
                    exit_code=proc.returncode,
                    sig=-proc.returncode if proc.returncode < 0 else None,
                    stop_requested=supervisor._stop_request() is not None,
                )
        if not (run_dir / EXIT_FILE).exists():
            with contextlib.suppress(Exception):
                return supervisor._finish(exit_code=None, sig=None, error="supervisor error (see stderr.log)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
