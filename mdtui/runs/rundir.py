"""The one reader of a run directory: its events, its exit record and the index fields they give.

Everything that wants to know what a run's files say (the index, reconcile, the results log, the
views) asks here, so ``events.jsonl`` is parsed one way only: incrementally, tolerant of a torn
last line, through ``engine.schema.events``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.schema.events import EventTail, RunState, apply_event
from mdtui.runs.status import is_status
from mdtui.system.fs import read_json

EVENTS_FILE = "events.jsonl"
EXIT_FILE = "exit.json"


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
    # chunked reads: one huge read() would allocate its whole size up front
    tail = EventTail(run_dir / "events.jsonl")
    state = RunState()
    while True:
        batch = tail.read_new()
        if not batch:
            return state
        for event in batch:
            state = apply_event(state, event)


def exit_fields(run_dir: Path) -> dict[str, Any] | None:
    """Index fields of a finished run from its exit.json and events, or None without exit.json."""
    exit_info = read_json(run_dir / EXIT_FILE)
    if not isinstance(exit_info, dict) or not is_status(exit_info.get("status")):
        return None
    fields: dict[str, Any] = {
        "status": exit_info["status"],
        "ended_t": exit_info.get("ended_t"),
        "exit_code": exit_info.get("exit_code"),
        "error": exit_info.get("error"),
    }
    fields.update(metrics_from_state(read_run_state(run_dir)))
    return fields
