"""How a run ends: its final status decided in one function and written down in one order.

The supervisor (which watched its engine exit) and reconcile (which finds a supervisor gone) both
come here, so the two can never disagree about a run.

``decide`` turns what is known about the engine's end (an ``EngineEnd``) into a status and a reason.
``settle`` writes that down in the order that makes ``exit.json`` a promise:

1. ``run.json`` gets the final fields and the plots are drawn: everything inside the run directory;
2. the RESULTS.md entry (``mdtui.results.log.record_finished``: idempotent, converging);
3. ``exit.json``, the last write into the run directory: whoever sees it sees a finished folder, and
   a folder deleted once it appears is never re-created;
4. the index row, without touching the run directory: a run is never ``completed`` in the index
   before its RESULTS.md entry exists.

A supervisor killed anywhere in between leaves a run that is still live in the index with a dead
supervisor; the next ``reconcile`` decides again from the same facts and repeats the steps.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.schema.events import RunState
from mdtui.execution.notify import notify_ended
from mdtui.results.log import record_finished
from mdtui.runs.rundir import EVENTS_FILE, EXIT_FILE, exit_fields, metrics_from_state
from mdtui.runs.status import RunStatus
from mdtui.runs.store import RunRecord, RunStore
from mdtui.system.fs import atomic_write_json, read_json

STOP_REQUEST = "stop-request.json"  # written by whoever asks a run to stop, before any signal
# written by a Slurm job's supervisor for a SIGTERM mdtui did not send (``"by"`` below), never into
# stop-request.json: a stop mdtui asked for must never be overwritten, or set aside with a dead
# attempt's bookkeeping, by an attempt that got Slurm's SIGTERM (a requeue) at the same moment
SLURM_TERM = "slurm-term.json"
NEVER_STARTED_KEY = "never_started"  # in exit.json: the engine never ran (no RESULTS.md line)
RESULTS_PENDING_KEY = "results_pending"  # in exit.json: settled on a cluster node, results not yet logged


# who sent a stop signal that mdtui did not (slurm-term.json's "by", written by the supervisor of a
# Slurm job that got Slurm's SIGTERM): the time-limit warning, or someone else's scancel / a requeue
BY_TIME_LIMIT = "slurm time limit"
BY_SLURM = "slurm"
TIME_LIMIT_REASON = "time limit"
CANCELLED_REASON = (
    "cancelled outside mdtui: the job got SIGTERM from Slurm (scancel by a user or an admin, a requeue "
    "or a preemption); last.pt was saved, resume with `mdtui run --resume`"
)


@dataclass(frozen=True)
class SlurmEnd:
    """What Slurm says of a run's job when the run's supervisor left no ending (exit.json)."""

    job_id: str
    state: str | None  # Slurm's end state (CANCELLED, TIMEOUT, NODE_FAIL...); None: Slurm forgot the job
    reason: str | None = None
    node: str | None = None
    exit_code: int | None = None
    started: bool = True  # the run's engine ever ran (else the job ended while pending)


@dataclass(frozen=True)
class EngineEnd:
    """What is known about how a run's engine ended (or that it has not)."""

    event_status: str | None = None  # the status of the engine's own run_finished event, if any
    event_error: str | None = None
    exit_code: int | None = None  # None: never started, or unknown because the supervisor is gone
    signal: int | None = None  # the signal that killed the engine, when the supervisor saw it
    stop_requested: bool = False  # stop-request.json exists: mdtui asked for this end
    killed: bool = False  # the supervisor SIGKILLed the engine after the stop grace period
    supervisor_vanished: bool = False  # decided by reconcile, not by the engine's supervisor
    engine_alive: bool = False  # (reconcile only) the recorded engine process still runs
    engine_pid: int | None = None
    error: str | None = None  # the supervisor's own failure (the engine could not start, ...)
    stderr_tail: str = ""  # the engine's last stderr lines, for a failure without a reason
    # (runs of several processes) the rank that failed first and its error, from torchrun's report
    rank_error: str | None = None
    # the engine never ran (launch failed, the backend refused the run, cancelled while pending):
    # nothing to record in RESULTS.md (see ``end_unstarted``)
    never_started: bool = False
    term_by: str | None = None  # BY_TIME_LIMIT / BY_SLURM: Slurm, not mdtui, sent the stop signal
    slurm: SlurmEnd | None = None  # Slurm's word on a job whose supervisor wrote no ending


@dataclass(frozen=True)
class Ending:
    status: RunStatus
    error: str | None = None
    final: bool = True  # False: lost while the engine still runs; reconcile looks again later


def decide(end: EngineEnd) -> Ending:
    """The one place a run's final status is decided.

    * ``completed``: the engine said so (run_finished{completed}) and exited 0 -- or its exit code is
      unknown because the supervisor is gone and the engine has exited;
    * ``stopped``: mdtui asked for the stop (stop-request.json), or Slurm's time-limit warning came
      (reason "time limit");
    * ``lost``: the supervisor vanished and the engine did not end by itself (it was stopped by its
      parent's death, killed with it, or still runs: then the decision is not final);
    * ``failed``: any other end, also a stop signal from Slurm that mdtui did not ask for.

    Under Slurm, what Slurm says is input too: who sent the stop signal (``term_by``), and the job's
    end state when the supervisor could not write the ending (``slurm``, see ``_slurm_ending``).
    """
    if end.slurm is not None:
        return _slurm_ending(end, end.slurm)
    return _signal_origin(_engine_ending(end), end.term_by)


def _signal_origin(ending: Ending, term_by: str | None) -> Ending:
    """A stop whose signal came from Slurm, not from mdtui."""
    if ending.status != RunStatus.STOPPED or term_by not in (BY_TIME_LIMIT, BY_SLURM):
        return ending
    if term_by == BY_TIME_LIMIT:
        reason = TIME_LIMIT_REASON if not ending.error else f"{TIME_LIMIT_REASON}; {ending.error}"
        return dataclasses.replace(ending, error=reason)
    return Ending(RunStatus.FAILED, CANCELLED_REASON)


def _slurm_ending(end: EngineEnd, job: SlurmEnd) -> Ending:
    """How a Slurm run ended when its supervisor could not write exit.json: from the engine's own
    events (as for a local supervisor that vanished) and Slurm's end state, named in the reason."""
    state = job.state
    slurm_reason = f"{state} ({job.reason})" if job.reason not in (None, "", "None") else state
    if not job.started:
        if end.stop_requested:
            return Ending(RunStatus.CANCELLED, "cancelled before it started")
        if state == "CANCELLED":  # a pending run cancelled by anyone ends alike (end_unstarted)
            return Ending(
                RunStatus.CANCELLED, "the job was cancelled outside mdtui before it started (scancel)"
            )
        if state is None:
            return Ending(RunStatus.LOST, f"Slurm no longer knows job {job.job_id} and the run never started")
        return Ending(
            RunStatus.FAILED,
            f"the job ended {slurm_reason} before the run started; see {job.job_id}'s slurm-*.err",
        )
    base = _engine_ending(end)
    if base.status == RunStatus.COMPLETED:
        return base
    if state is None:
        return Ending(
            RunStatus.LOST, f"Slurm no longer knows job {job.job_id} and the run left no exit record"
        )
    why = {
        "CANCELLED": (
            (RunStatus.STOPPED, "cancelled by mdtui (scancel)")
            if end.stop_requested
            else (RunStatus.FAILED, "cancelled outside mdtui (scancel by a user or an admin)")
        ),
        # mdtui's kill (scancel --signal=KILL) ends the batch shell by SIGKILL: Slurm says FAILED
        "FAILED": (RunStatus.STOPPED, "killed by mdtui (scancel --signal=KILL)")
        if end.stop_requested
        else None,
        "TIMEOUT": (
            RunStatus.STOPPED,
            "time limit: Slurm ended the job (TIMEOUT) before the supervisor could",
        ),
        "NODE_FAIL": (
            RunStatus.LOST,
            f"its node {job.node} failed (NODE_FAIL)" if job.node else "its node failed (NODE_FAIL)",
        ),
        "PREEMPTED": (RunStatus.LOST, "preempted by Slurm (PREEMPTED)"),
        "OUT_OF_MEMORY": (RunStatus.FAILED, "out of memory: the job went over its mem limit (OUT_OF_MEMORY)"),
        "BOOT_FAIL": (RunStatus.LOST, "its node failed to boot (BOOT_FAIL)"),
        "DEADLINE": (RunStatus.STOPPED, "its deadline passed (DEADLINE)"),
    }.get(state)
    if why is None:
        why = (
            RunStatus.LOST if base.status == RunStatus.LOST else RunStatus.FAILED,
            f"the job ended {slurm_reason} (exit code {job.exit_code}) without the supervisor's exit record",
        )
    status, reason = why
    detail = f"; {base.error}" if base.error and status != RunStatus.STOPPED else ""
    return Ending(status, reason + detail)


def _engine_ending(end: EngineEnd) -> Ending:
    """The ending from the engine's and the supervisor's facts alone."""
    if end.engine_alive:
        pid = f"engine pid {end.engine_pid} " if end.engine_pid else "its engine "
        return Ending(RunStatus.LOST, f"the supervisor vanished ({pid}is still running)", final=False)
    if end.error:
        return Ending(RunStatus.FAILED, end.error)
    exit_ok = end.exit_code == 0 or (end.exit_code is None and end.supervisor_vanished)
    if end.event_status == RunStatus.COMPLETED and exit_ok:
        return Ending(RunStatus.COMPLETED)
    if end.stop_requested:
        return Ending(
            RunStatus.STOPPED, "killed (SIGKILL) after the stop grace period" if end.killed else None
        )
    if end.supervisor_vanished:
        if end.event_status == RunStatus.FAILED:
            return Ending(RunStatus.FAILED, end.event_error or "the engine failed")
        if end.event_status == RunStatus.STOPPED:  # the parent-death signal: a graceful stop
            return Ending(RunStatus.LOST, "the supervisor vanished; the engine saved last.pt and stopped")
        return Ending(RunStatus.LOST, "the supervisor vanished without writing exit.json")
    return Ending(RunStatus.FAILED, failure_reason(end))


def failure_reason(end: EngineEnd) -> str:
    # the failing rank before rank 0's own error: when a peer dies, rank 0 fails too (its
    # collective breaks), and that error names the symptom, not the cause
    if end.rank_error:
        return end.rank_error
    if end.event_error:
        return end.event_error
    if end.signal:
        reason = f"the engine was killed by {signal.Signals(end.signal).name} (not sent by mdtui)"
    elif end.exit_code == 0 and end.event_status is None:
        reason = "the engine exited without a run_finished event"
    elif end.exit_code == 0 and end.event_status == RunStatus.STOPPED:
        reason = "the engine stopped on a signal mdtui did not send"
    else:
        reason = f"the engine exited with code {end.exit_code}"
    return f"{reason}: {end.stderr_tail}" if end.stderr_tail else reason


def engine_end_from_events(state: RunState, **facts: Any) -> EngineEnd:
    """An ``EngineEnd`` whose event facts come from the reduced ``events.jsonl``."""
    return EngineEnd(event_status=state.status if state.finished else None, event_error=state.error, **facts)


def final_fields(ending: Ending, end: EngineEnd, state: RunState, now: float) -> dict[str, Any]:
    """The index / run.json fields of an ending (metrics from the engine's events)."""
    ended_t = state.finished_t if end.supervisor_vanished and state.finished_t else now
    return {
        "status": ending.status.value,
        "ended_t": ended_t,
        "exit_code": end.exit_code,
        "error": ending.error,
        **metrics_from_state(state),
    }


def settle(
    store: RunStore,
    rec: RunRecord,
    ending: Ending,
    end: EngineEnd,
    state: RunState,
    *,
    note: str | None = None,
    now: float | None = None,
) -> RunRecord:
    """Write ``ending`` down in the order above; return the run's record as now indexed."""
    ending = killed_as_asked(ending, end, Path(rec.run_dir))
    fields = final_fields(ending, end, state, time.time() if now is None else now)
    final = dataclasses.replace(rec, **fields)
    run_dir = Path(rec.run_dir)
    # on a cluster node (mdtui.execution.node_store) the RESULTS.md line is the manager's to write
    indexed = getattr(store, "indexes", True)
    if run_dir.is_dir():  # a folder deleted by hand stays deleted: only the index learns the end
        store.update_run_json(run_dir, fields)
        if not end.never_started and indexed:
            record_results(store, final)
        if ending.final:
            notify_ended(final)  # the user's notify command, once per ending (it claims it in run.json)
            info = exit_record(final, ending, end, state, note)
            if not indexed and not end.never_started:
                info[RESULTS_PENDING_KEY] = True
            if getattr(store, "attempt", None):  # which job attempt ended (node_store.reopen)
                info["attempt"] = store.attempt
            atomic_write_json(run_dir / EXIT_FILE, info)
    store.update(rec.run_id, run_json=False, **fields)
    return store.get(rec.run_id) or final


KILLED_AT_ONCE = "killed (SIGKILL) at once, as asked (Kill now, or a stop with --grace 0)"


def killed_as_asked(ending: Ending, end: EngineEnd, run_dir: Path) -> Ending:
    """A kill asked with no grace ("Kill now") is said as such, not as a grace period that ran out."""
    if not (end.killed and ending.status == RunStatus.STOPPED):
        return ending
    request = read_json(run_dir / STOP_REQUEST)
    if isinstance(request, dict) and request.get("grace") in (0, 0.0):
        return dataclasses.replace(ending, error=KILLED_AT_ONCE)
    return ending


def end_unstarted(
    store: RunStore,
    run_id: str,
    status: RunStatus,
    reason: str,
    *,
    from_statuses: Iterable[str] | None = None,
    now: float | None = None,
) -> RunRecord | None:
    """End a run whose engine never started: its launch failed, the backend refused it, or it was
    cancelled while it waited (in mdtui's queue or in Slurm's, by mdtui or by anyone else).

    Such a run produced no result, so it gets no RESULTS.md line (``mdtui status`` shows it, with
    ``reason``); it gets exit.json and its index row as any other ending. With ``from_statuses``
    the status is first claimed with one conditional update of the index (of a cancel racing a
    launch exactly one wins); None when the run had already left those statuses.
    """
    now = time.time() if now is None else now
    if from_statuses is not None and not store.transition(
        run_id, list(from_statuses), status=status.value, ended_t=now, error=reason
    ):
        return None
    rec = store.get(run_id)
    if rec is None:
        return None
    return settle(store, rec, Ending(status, reason), EngineEnd(never_started=True), RunState(), now=now)


def converge(store: RunStore, rec: RunRecord) -> RunRecord:
    """The ender died after writing exit.json: bring run.json, RESULTS.md and the index to it.

    Nothing else is written into the run folder (exit.json was its last write); run.json only when
    it disagrees, and the log only when the run's line is missing (plots were drawn before)."""
    run_dir = Path(rec.run_dir)
    fields = exit_fields(run_dir) or {}
    info = read_json(run_dir / "run.json")
    if isinstance(info, dict) and any(info.get(k) != v for k, v in fields.items()):
        store.update_run_json(run_dir, fields)
    final = dataclasses.replace(rec, **fields)
    ending = read_json(run_dir / EXIT_FILE) or {}
    if not ending.get(NEVER_STARTED_KEY):  # the node that settled it left its plots and line to us
        record_results(store, final, plots=bool(ending.get(RESULTS_PENDING_KEY)))
    store.update(rec.run_id, run_json=False, **fields)
    return store.get(rec.run_id) or final


def exit_record(
    rec: RunRecord, ending: Ending, end: EngineEnd, state: RunState, note: str | None
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": rec.run_id,
        "status": ending.status.value,
        "exit_code": end.exit_code,
        "signal": signal.Signals(end.signal).name if end.signal else None,
        "ended_t": rec.ended_t,
        "stop_requested": end.stop_requested,
        "event_status": end.event_status,
        "error": ending.error,
        "summary": state.summary or {},
        # what the engine had written when this was decided: reconcile looks again at a lost run
        # whose events grow after it (an engine nobody could see)
        "events_size": events_size(Path(rec.run_dir)),
    }
    if note:
        info["note"] = note
    if end.never_started:
        info[NEVER_STARTED_KEY] = True
    return info


def events_size(run_dir: Path) -> int:
    try:
        return (run_dir / EVENTS_FILE).stat().st_size
    except OSError:
        return 0


def record_results(store: RunStore, rec: RunRecord, *, plots: bool = True) -> None:
    """The run's plots and RESULTS.md lines; a failure here is reported, never fatal to the ending
    (a run whose results log cannot be written must still end, or it would stay live forever)."""
    try:
        record_finished(store, rec.run_id, record=rec, plots=plots)
    except Exception:
        print(f"mdtui: results log not updated for {rec.run_id}:\n{traceback.format_exc()}", file=sys.stderr)
