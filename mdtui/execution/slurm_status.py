"""What Slurm says of mdtui's jobs, and polling it into the index.

``poll_jobs`` asks Slurm about every live Slurm run in ONE query and maps what it says: PENDING ->
``queued`` (``blocked`` when an upstream failed: DependencyNeverSatisfied), RUNNING -> ``starting``
until the supervisor records itself. When the supervisor wrote ``exit.json`` that is the truth (as
locally); Slurm's end state decides only when it could not (``ending.decide`` given a ``SlurmEnd``), and a job Slurm no longer
knows without an exit record is ``lost``. ``reconcile`` calls ``poll_jobs``; the launcher that submits
the jobs is ``mdtui.execution.slurm``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.execution import slurm_job
from mdtui.execution.ending import (
    STOP_REQUEST,
    SlurmEnd,
    decide,
    engine_end_from_events,
    settle,
)
from mdtui.execution.node_store import NODE_KEY
from mdtui.runs.rundir import EVENTS_FILE, OUTPUT_FILES, exit_fields, read_run_state
from mdtui.runs.status import FINISHED, LIVE, RunStatus
from mdtui.system import slurm as slurm_cli
from mdtui.system.fs import read_json

if TYPE_CHECKING:
    from mdtui.runs.store import RunRecord, RunStore

# statuses a Slurm run has while its job may still be in Slurm's hands
POLLED = (*LIVE, RunStatus.QUEUED, RunStatus.BLOCKED)
# ended runs whose job Slurm may run again (a requeue, a preemption, a failed node end the attempt)
REQUEUABLE = (RunStatus.FAILED, RunStatus.LOST)
LIVE_JOB_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
    }
)
NEVER_SATISFIED = "DependencyNeverSatisfied"
# how long (and how many) ended Slurm runs are watched for a requeue of their job
REQUEUE_WATCH_SECONDS = 3600.0
REQUEUE_WATCH_RUNS = 200


# --------------------------------------------------------------------------- what Slurm says


def describe(job: Any) -> str:
    """One line for the TUI / status: "PENDING (Priority)", "RUNNING on n3, 12m of 2h00m"."""
    state = job.state
    if state == "PENDING":
        return f"PENDING ({job.reason})" if job.reason and job.reason != "None" else "PENDING"
    text = state + (f" on {job.node}" if getattr(job, "node", None) else "")
    elapsed, limit = getattr(job, "elapsed_s", None), getattr(job, "limit_s", None)
    if elapsed is not None:
        text += f", {_clock(elapsed)}" + (f" of {_clock(limit)}" if limit else "")
    return text


def _clock(seconds: float) -> str:
    """ "12m", "1h05m", "2d 3h05m": whole minutes, so that a running job's line (stored in the index)
    changes once a minute, not at every poll of every job; units spelled out ("0:20" read as
    seconds)."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, minutes = s // 3600, s % 3600 // 60
    text = f"{hours}h{minutes:02d}m" if hours or days else f"{minutes}m"
    return f"{days}d {text}" if days else text


# --------------------------------------------------------------------------- polling


def poll_jobs(
    store: RunStore, records: list[RunRecord] | None = None, now: float | None = None
) -> list[RunRecord]:
    """One Slurm query for every live Slurm run; returns the records whose status or reason changed.

    A run whose supervisor wrote exit.json is left to ``reconcile``'s convergence (the same path as
    a local run); nothing changes when Slurm cannot be asked."""
    now = time.time() if now is None else now
    runs = records if records is not None else slurm_runs(store)
    runs = [r for r in runs if r.job_id and exit_fields(Path(r.run_dir)) is None]
    ended = [] if records is not None else recently_ended(store, now)
    if not runs and not ended:
        return []
    try:
        jobs = slurm_cli.job_states([str(r.job_id) for r in runs + ended])
    except slurm_cli.SlurmUnavailable:
        return _unreachable(store, runs, now)
    except slurm_cli.SlurmError:
        return []
    changed = []
    for rec in ended:
        job = jobs.get(str(rec.job_id))
        if job is None:
            continue
        if job.state in ("PENDING", "REQUEUED") and rec.status in REQUEUABLE:  # Slurm runs it again
            requeued(store, rec, job)
            changed.append(store.get(rec.run_id) or rec)
        elif (job.state not in LIVE_JOB_STATES or (rec.job_state or "").startswith(UNREACHABLE)) and describe(
            job
        ) != rec.job_state:
            # the run ended before its job did: what Slurm says now replaces "RUNNING on n3" (and
            # a line from while the controller was unreachable)
            store.update(rec.run_id, run_json=False, job_state=describe(job))
    for rec in runs:
        new = _apply(store, rec, jobs.get(str(rec.job_id)), now)
        if new is not None and (new.status, new.error) != (rec.status, rec.error):
            changed.append(new)
    return changed


UNREACHABLE = "Slurm unreachable"
UNREACHABLE_AT = f"{UNREACHABLE} — last known state at "  # then HH:MM:SS, ": " and that state


def outage(records: Iterable[RunRecord]) -> str | None:
    """ "Slurm unreachable — last known state at T" while the last poll found the controller silent
    (T: when its runs' states were last known, the earliest of them), for the screens that show many
    runs (the TUI's main screen, `mdtui status`); None while Slurm answers or no Slurm run waits or
    runs. Read from the index (``_unreachable`` marks the runs), so every reader agrees."""
    times = [
        r.job_state[len(UNREACHABLE_AT) :].split(": ", 1)[0]
        for r in records
        if r.status in POLLED and (r.job_state or "").startswith(UNREACHABLE_AT)
    ]
    return f"{UNREACHABLE_AT}{min(times)}" if times else None


def _unreachable(store: RunStore, runs: list[RunRecord], now: float) -> list[RunRecord]:
    """The controller did not answer (within QUERY_TIMEOUT_S, one try per poll): each live run keeps
    its status and says that it is Slurm's last known word, and since when nothing newer came. The
    next poll that gets an answer replaces the line."""
    changed = []
    at = time.strftime("%H:%M:%S", time.localtime(now))
    for rec in runs:
        if (rec.job_state or "").startswith(UNREACHABLE):
            continue
        store.update(
            rec.run_id,
            run_json=False,
            job_state=f"{UNREACHABLE_AT}{at}: {rec.job_state or 'none yet'}",
        )
        changed.append(store.get(rec.run_id) or rec)
    return changed


def slurm_runs(store: RunStore) -> list[RunRecord]:
    """Live (and pending) Slurm runs; a local queue of thousands costs one narrow query."""
    return _with_jobs(store, POLLED, lambda job_id, ended_t: True)


def recently_ended(store: RunStore, now: float) -> list[RunRecord]:
    """Slurm runs that ended lately. Slurm may undo the end of a failed or lost one (a requeue, a
    preemption or a failed node ends the attempt and puts the job back in Slurm's queue), and the
    job of any of them may outlive the run by a moment: its final state is read in the same query."""
    return _with_jobs(
        store, FINISHED, lambda job_id, ended_t: bool(ended_t) and now - ended_t < REQUEUE_WATCH_SECONDS
    )[:REQUEUE_WATCH_RUNS]


def _with_jobs(store: RunStore, statuses: Any, keep: Any) -> list[RunRecord]:
    """The Slurm runs among those in ``statuses`` that ``keep(job_id, ended_t)`` (one narrow query,
    then records of those runs only)."""
    rows = store.index_rows(["run_id", "job_id", "ended_t"], statuses=[str(s) for s in statuses])
    wanted = [run_id for run_id, job_id, ended_t in rows if job_id and keep(job_id, ended_t)]
    return store.list_runs(run_ids=wanted) if wanted else []


REQUEUED_NOTE = "requeued by Slurm"


def requeued_note(job: Any) -> str:
    """The note of a run whose job Slurm put back in its queue, with Slurm's current reason."""
    reason = getattr(job, "reason", None)
    return f"{REQUEUED_NOTE}; waiting for {reason}" if reason and reason != "None" else REQUEUED_NOTE


def requeued(store: RunStore, rec: RunRecord, job: Any) -> None:
    """The job of a run is pending again (a requeue, a preemption, a failed node): the attempt that
    ran is over and the next one will resume in the same directory (slurm_job). The run is
    ``queued`` again; nothing of the dead attempt (its pids, its ending) is read as the new one's."""
    # the dead attempt's ending and its record of Slurm's SIGTERM; a stop mdtui asked for stays
    slurm_job.set_aside_attempt(Path(rec.run_dir))
    store.begin_attempt(
        rec.run_id, status=RunStatus.QUEUED.value, job_state=describe(job), error=requeued_note(job)
    )


def _apply(store: RunStore, rec: RunRecord, job: Any | None, now: float) -> RunRecord | None:
    """Bring one Slurm run's record in line with its job."""
    if job is not None and job.state in LIVE_JOB_STATES:
        return _live(store, rec, job)
    run_dir = Path(rec.run_dir)
    if exit_fields(run_dir) is not None:  # the supervisor finished between the two looks
        return None
    state = read_run_state(run_dir)
    # mdtui asked (Slurm's own SIGTERM, a scancel or a time limit, is recorded in slurm-term.json)
    asked = isinstance(read_json(run_dir / STOP_REQUEST), dict)
    started = ever_ran(rec, run_dir)
    said = SlurmEnd(
        job_id=str(rec.job_id),
        state=job.state if job is not None else None,
        reason=job.reason if job is not None else None,
        node=getattr(job, "node", None),
        exit_code=getattr(job, "exit_code", None),
        started=started,
    )
    end = engine_end_from_events(
        state, stop_requested=asked, supervisor_vanished=True, never_started=not started, slurm=said
    )
    ending = decide(end)
    store.update(
        rec.run_id, run_json=False, job_state=describe(job) if job is not None else "gone from Slurm"
    )
    return settle(
        store, rec, ending, end, state, note=f"decided from Slurm's record of job {rec.job_id}", now=now
    )


def ever_ran(rec: RunRecord, run_dir: Path) -> bool:
    """Whether the run ever started on a node, from facts that outlive it: never from the index's
    pids alone, which the manager sets only if a poll saw the attempt alive (a job that starts and
    dies between two polls without an exit.json has none).

    Any one suffices: the node's supervisor recorded itself in run.json's ``node`` fields for this
    job (its first act); the supervisor or the engine wrote stdout.log / stderr.log or events (an
    earlier attempt counts: a requeued run cancelled while pending again has trained); a poll saw
    it running. Slurm's own traces say only that the batch script ran, not the run: slurm-<id>.err
    exists and TimeUsed reads 0:00 for a script that failed at once (tried on the test cluster), and
    such a job keeps "ended FAILED before the run started; see slurm-*.err"."""
    if rec.supervisor_pid is not None or rec.status in (RunStatus.RUNNING, RunStatus.STARTING):
        return True
    info = read_json(run_dir / "run.json")
    node = info.get(NODE_KEY) if isinstance(info, dict) else None
    if isinstance(node, dict) and str(node.get("attempt", "")).split(":", 1)[0] == str(rec.job_id):
        return True
    for name in (EVENTS_FILE, *OUTPUT_FILES.values()):
        with contextlib.suppress(OSError):
            if (run_dir / name).stat().st_size > 0:
                return True
    return False


def _live(store: RunStore, rec: RunRecord, job: Any) -> RunRecord | None:
    text = describe(job)
    fields: dict[str, Any] = {"job_state": text}
    if job.state == "PENDING" and job.reason == NEVER_SATISFIED:
        if rec.status == RunStatus.QUEUED:
            store.transition(
                rec.run_id,
                [RunStatus.QUEUED.value],
                status=RunStatus.BLOCKED.value,
                error=f"an upstream job failed: Slurm holds job {rec.job_id} ({NEVER_SATISFIED}); "
                "cancel it (`mdtui stop`) and queue it again once the upstream completes",
            )
    elif job.state == "PENDING" and rec.status == RunStatus.BLOCKED:
        store.transition(rec.run_id, [RunStatus.BLOCKED.value], status=RunStatus.QUEUED.value, error=None)
    elif job.state == "PENDING" and rec.status in LIVE:
        # the attempt that ran is gone (its node failed, Slurm requeued it) and left no ending:
        # the run waits for its next attempt, not "running" for good
        requeued(store, rec, job)
        return store.get(rec.run_id)
    elif job.state == "PENDING" and (rec.error or "").startswith(REQUEUED_NOTE):
        if rec.error != requeued_note(job):  # Slurm's reason, as of this poll
            store.update(rec.run_id, run_json=False, error=requeued_note(job))
    elif job.state == "RUNNING" and rec.status in (RunStatus.QUEUED, RunStatus.BLOCKED):
        # the supervisor records "running" itself once the engine starts
        store.transition(
            rec.run_id,
            [RunStatus.QUEUED.value, RunStatus.BLOCKED.value],
            status=RunStatus.STARTING.value,
            started_t=time.time(),
            error=None,
        )
        rec = store.get(rec.run_id) or rec
    if text != rec.job_state:
        store.update(rec.run_id, run_json=False, **fields)
    elif (
        rec.status == RunStatus.RUNNING or (job.state == "PENDING" and rec.status == RunStatus.QUEUED)
    ) and (job.state != "PENDING" or not (rec.error or "").startswith(REQUEUED_NOTE)):
        return rec  # nothing changed: no second read of the index
    return store.get(rec.run_id)
