"""Reconciling the index with reality: what a run's files and processes say about how it ended.

A run is "live" in the index until its supervisor records the end. When the supervisor is gone,
its exit.json decides; without one, the engine's own ``run_finished`` event (durable in
events.jsonl) decides when the engine is gone too; otherwise the run is ``lost``. Process identity
is pid + start time + boot id, so a reused pid is never mistaken for a run's process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import RunState
from mdtui.fsutil import atomic_write_json, read_json
from mdtui.procinfo import process_alive

if TYPE_CHECKING:
    from mdtui.store import RunRecord, RunStore

LOST_GRACE_SECONDS = 60.0  # a run marked starting may not have recorded its supervisor yet


def metrics_from_state(state: RunState) -> dict[str, Any]:
    """Index metric fields from a reduced event stream (the run_finished summary wins)."""
    summary = state.summary or {}
    last = state.epochs[-1] if state.epochs else None
    last_eval = state.last_eval or {}

    def number(value: Any) -> Any:  # a hand-edited or corrupt summary must not break the index
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def pick(key: str, fallback: Any) -> Any:
        value = number(summary.get(key))
        return value if value is not None else number(fallback)

    last_acc1 = pick("last_acc1", last.eval_acc1 if last else None)
    out = {
        "total_epochs": state.total_epochs,
        "epochs_done": int(pick("epochs_done", state.epochs_done) or 0),
        "best_acc1": state.best_acc1,
        "best_epoch": state.best_epoch,
        "last_acc1": last_acc1,
        "acc5": pick("acc5", last_eval.get("acc5")),
        "err1": pick("err1", (100.0 - state.best_acc1) if state.best_acc1 is not None else None),
        "many": pick("many", last_eval.get("many")),
        "medium": pick("medium", last_eval.get("medium")),
        "few": pick("few", last_eval.get("few")),
    }
    return {k: v for k, v in out.items() if v is not None or k != "total_epochs"}


def read_run_state(run_dir: Path) -> RunState:
    """Reduce ``run_dir/events.jsonl`` (missing file: an empty state)."""
    from engine.events import EventTail, RunState, apply_event

    # chunked reads: one huge read() would allocate its whole size up front
    tail = EventTail(run_dir / "events.jsonl")
    state = RunState()
    while True:
        batch = tail.read_new()
        if not batch:
            return state
        for event in batch:
            state = apply_event(state, event)


def reconcile(store: RunStore) -> list[RunRecord]:
    """Reconcile runs that claim to be live: a gone supervisor means exit.json's status, or ``lost``.

    Returns the records whose status changed.
    """
    changed: list[RunRecord] = []
    now = time.time()
    from mdtui.store import LIVE_STATUSES

    for rec in store.list_runs(statuses=list(LIVE_STATUSES)):
        if process_alive(rec.supervisor_pid, rec.supervisor_start, rec.boot_id):
            continue
        if rec.supervisor_pid is None and rec.started_t and now - rec.started_t < LOST_GRACE_SECONDS:
            continue  # launched a moment ago; the supervisor has not recorded itself yet
        fields = final_fields(rec.run_dir)
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
        from mdtui.results import record_finished

        record_finished(store, run_id)
    except Exception as exc:  # the index is right; a missing log line must not break `status`
        print(f"mdtui: could not record {run_id} in the results log: {exc}", file=sys.stderr)


def final_fields(run_dir: Path) -> dict[str, Any] | None:
    """Index fields of a finished run from its exit.json and events, or None without exit.json."""
    from mdtui.store import STATUSES

    exit_info = read_json(run_dir / "exit.json")
    if not isinstance(exit_info, dict) or exit_info.get("status") not in STATUSES:
        return None
    fields: dict[str, Any] = {
        "status": exit_info["status"],
        "ended_t": exit_info.get("ended_t"),
        "exit_code": exit_info.get("exit_code"),
        "error": exit_info.get("error"),
    }
    fields.update(metrics_from_state(read_run_state(run_dir)))
    return fields
