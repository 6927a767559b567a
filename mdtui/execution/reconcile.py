"""Reconciling the index with reality: what a run's files and processes say about how it ended.

A run is "live" in the index until its supervisor records the end. When the supervisor is gone,
its exit.json decides; without one, the engine's own ``run_finished`` event (durable in
events.jsonl) decides when the engine is gone too; otherwise the run is ``lost``. Process identity
is pid + start time + boot id, so a reused pid is never mistaken for a run's process.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mdtui.results.log import record_finished
from mdtui.runs.rundir import exit_fields, metrics_from_state, read_run_state
from mdtui.runs.status import LIVE
from mdtui.runs.store import RunRecord, RunStore
from mdtui.system.fs import atomic_write_json
from mdtui.system.processes import process_alive

LOST_GRACE_SECONDS = 60.0  # a run marked starting may not have recorded its supervisor yet


def reconcile(store: RunStore) -> list[RunRecord]:
    """Reconcile runs that claim to be live: a gone supervisor means exit.json's status, or ``lost``.

    Returns the records whose status changed.
    """
    changed: list[RunRecord] = []
    now = time.time()
    for rec in store.list_runs(statuses=list(LIVE)):
        if process_alive(rec.supervisor_pid, rec.supervisor_start, rec.boot_id):
            continue
        if rec.supervisor_pid is None and rec.started_t and now - rec.started_t < LOST_GRACE_SECONDS:
            continue  # launched a moment ago; the supervisor has not recorded itself yet
        fields = exit_fields(rec.run_dir)
        adopted = False
        if fields is None:
            fields, adopted = orphan_fields(rec, now)
        store.update(rec.run_id, **fields)
        changed.append(store.get(rec.run_id) or rec)
        if adopted:
            record_adopted(store, rec.run_id)
    return changed


def orphan_fields(rec: RunRecord, now: float) -> tuple[dict[str, Any], bool]:
    """A run whose supervisor vanished: ``lost``, unless its engine had already said how it ended.

    The engine's ``run_finished`` event is durable, so a run that finished while (or after) its
    supervisor died keeps its real status; exit.json is then written here with a note.
    """
    state = read_run_state(rec.run_dir)
    engine_alive = process_alive(rec.pid, rec.proc_start, rec.boot_id)
    if not engine_alive and state.status in ("completed", "stopped", "failed"):
        note = "the supervisor vanished; status taken from the engine's run_finished event"
        fields: dict[str, Any] = {
            "status": state.status,
            "ended_t": state.finished_t or now,
            "error": state.error if state.status == "failed" else None,
        }
        fields.update(metrics_from_state(state))
        atomic_write_json(
            rec.run_dir / "exit.json",
            {
                "status": state.status,
                "exit_code": None,
                "signal": None,
                "ended_t": fields["ended_t"],
                "error": fields["error"],
                "note": note,
            },
        )
        return fields, True
    fields = {
        "status": "lost",
        "ended_t": now,
        "error": "the supervisor vanished without writing exit.json"
        + (f" (engine pid {rec.pid} is still running)" if engine_alive else ""),
    }
    fields.update(metrics_from_state(state))
    return fields, False


def record_adopted(store: RunStore, run_id: str) -> None:
    """Write the results-log entry the vanished supervisor never wrote (best effort)."""
    try:
        record_finished(store, run_id)
    except Exception as exc:  # the index is right; a missing log line must not break `status`
        print(f"mdtui: could not record {run_id} in the results log: {exc}", file=sys.stderr)
