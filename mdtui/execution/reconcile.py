"""Reconciling the index with reality: what a run's files and processes say about how it ended.

A run is "live" in the index until its supervisor records the end. When the supervisor is gone:

* with an ``exit.json`` (the supervisor died after writing it), that record is the end: the index,
  run.json and RESULTS.md are brought to agree with it;
* without one, ``mdtui.execution.ending.decide`` decides from the engine's own events
  (``run_finished`` is durable) and whether the engine still runs, and ``settle`` writes it down.

A run is ``lost`` when its supervisor vanished and its engine did not end by itself. While the engine
still runs that is provisional (no exit.json): reconcile looks at such a run again every time and
takes the engine's own ending once it has one. A settled ``lost`` run is looked at again only if its
events grow after it was decided (an engine nobody could see). Process identity is pid + start time
+ boot id, so a reused pid is never mistaken for a run's process.
"""

from __future__ import annotations

import time
from pathlib import Path

from engine.schema.events import RunState
from mdtui.execution import slurm_status
from mdtui.execution.ending import (
    STOP_REQUEST,
    Ending,
    EngineEnd,
    converge,
    decide,
    engine_end_from_events,
    events_size,
    settle,
)
from mdtui.execution.launching import on_cluster
from mdtui.execution.node_store import adopt, reopen
from mdtui.execution.ranks import ranks_alive
from mdtui.runs.rundir import EXIT_FILE, exit_fields, read_run_state
from mdtui.runs.status import LIVE, RunStatus
from mdtui.runs.store import RunRecord, RunStore
from mdtui.system.fs import read_json
from mdtui.system.processes import process_alive

LOST_GRACE_SECONDS = 60.0  # a run marked starting may not have recorded its supervisor yet
ADOPTED_NOTE = "the supervisor vanished; status taken from the engine's run_finished event"


def reconcile(store: RunStore) -> list[RunRecord]:
    """Reconcile runs that claim to be live, and lost runs that may have ended since.

    Returns the records whose status or reason changed.
    """
    changed: list[RunRecord] = []
    now = time.time()
    for rec in store.list_runs(statuses=[*LIVE, RunStatus.LOST]):
        if on_cluster(rec):
            continue  # its supervisor runs on a node, where this host's pids mean nothing: below
        if rec.status == RunStatus.LOST:
            if not worth_a_second_look(rec):
                continue
        elif process_alive(rec.supervisor_pid, rec.supervisor_start, rec.boot_id):
            continue
        elif rec.supervisor_pid is None and rec.started_t and now - rec.started_t < LOST_GRACE_SECONDS:
            continue  # launched a moment ago; the supervisor has not recorded itself yet
        new = reconcile_run(store, rec, now)
        if new is not None and (new.status, new.error) != (rec.status, rec.error):
            changed.append(new)
    # a Slurm run: its node writes its run directory only (node_store); what it wrote, then what
    # Slurm says (one query for all)
    for rec in slurm_status.slurm_runs(store):
        new = adopt(store, rec)
        if new is not None and (new.status, new.error) != (rec.status, rec.error):
            changed.append(new)
    for rec in slurm_status.recently_ended(store, now):
        new = reopen(store, rec)
        if new is not None:
            changed.append(new)
    changed += slurm_status.poll_jobs(store, now=now)
    return changed


def worth_a_second_look(rec: RunRecord) -> bool:
    """A lost run may still change: its engine ran on (no exit.json yet), or its events grew since."""
    run_dir = Path(rec.run_dir)
    if not run_dir.is_dir():
        return False
    info = read_json(run_dir / EXIT_FILE)
    if not isinstance(info, dict):
        return True
    recorded = info.get("events_size")
    return isinstance(recorded, int) and recorded != events_size(run_dir)


def reconcile_run(store: RunStore, rec: RunRecord, now: float) -> RunRecord | None:
    """Decide (or confirm) how ``rec`` ended now that its supervisor is gone; None: nothing to do."""
    run_dir = Path(rec.run_dir)
    if not run_dir.is_dir():
        # settle writes only the index when the folder is gone (and never re-creates it)
        gone = EngineEnd(supervisor_vanished=True)
        return settle(store, rec, Ending(RunStatus.LOST, "the run folder is gone"), gone, RunState(), now=now)
    if rec.status in LIVE and exit_fields(run_dir) is not None:
        return converge(store, rec)
    state = read_run_state(run_dir)
    # the ranks of a multi-process run are in sessions of their own and may outlive torchrun
    engine_alive = process_alive(rec.pid, rec.proc_start, rec.boot_id) or ranks_alive(run_dir, rec.boot_id)
    end: EngineEnd = engine_end_from_events(
        state,
        stop_requested=(run_dir / STOP_REQUEST).exists(),
        supervisor_vanished=True,
        engine_alive=engine_alive,
        engine_pid=rec.pid,
    )
    ending = decide(end)
    if rec.status == RunStatus.LOST and not ending.final:
        return None  # still lost, its engine still running: nothing new to write
    note = ADOPTED_NOTE if ending.status != RunStatus.LOST else None
    return settle(store, rec, ending, end, state, note=note, now=now)
