"""The one reader of a run directory: its events, its output logs, its exit record and the index
fields they give.

Everything that wants to know what a run's files say (the index, reconcile, the supervisor, the
results log, the views, ``mdtui run`` and ``mdtui logs``) asks here, so ``events.jsonl`` is parsed
one way only: incrementally, tolerant of a torn last line, through ``engine.schema.events``.
``tests/runs/test_rundir.py`` fails if another module of mdtui reads it by itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.schema.events import EventTail, Parsed, RunState, apply_event, encode, parse_line
from mdtui.runs.status import is_status
from mdtui.system.fs import append_line, read_json

EVENTS_FILE = "events.jsonl"
EXIT_FILE = "exit.json"
OUTPUT_FILES = {"stdout": "stdout.log", "stderr": "stderr.log"}


class RunEvents:
    """Follows one run's ``events.jsonl``: each ``poll`` reads only the bytes appended since the
    last, and ``state`` is the reduction of everything read so far (a torn last line waits for its
    newline). A missing file is an empty stream, so a run may be followed before its engine starts."""

    def __init__(self, run_dir: Path | str, run_id: str = "") -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        self._tail = EventTail(self.path)
        self.state = RunState(run_id=run_id)

    def poll(self) -> list[Parsed]:
        """Apply and return the lines appended since the last call (one bounded read: a view that
        polls on a timer stays responsive however big the file; ``drain`` reads to the end)."""
        return list(self.stream())

    def stream(self) -> Iterator[Parsed]:
        """``poll`` one event at a time: when an event is yielded, ``state`` already includes it."""
        for event in self._tail.read_new():
            self.state = apply_event(self.state, event)
            yield event

    def drain(self) -> list[Parsed]:
        """Apply and return everything appended up to the end of the file."""
        events: list[Parsed] = []
        while True:
            before = self._tail.offset
            events.extend(self.poll())
            if self._tail.offset == before:  # not "no events": a chunk may hold only part of a line
                return events


class RunOutput:
    """Follows a run's ``stdout.log`` or ``stderr.log`` line by line, as written (``mdtui logs``)."""

    def __init__(self, run_dir: Path | str, stream: str = "stdout") -> None:
        self.path = Path(run_dir) / OUTPUT_FILES[stream]
        self._tail = EventTail(self.path)

    def new_lines(self) -> Iterator[str]:
        """Every complete line appended since the last call, as written, without its newline.

        Read in bounded chunks up to the current end, so a huge log streams instead of loading."""
        while True:
            before = self._tail.offset
            for line in self._tail.read_lines():
                yield line.decode("utf-8", errors="replace")
            if self._tail.offset == before:
                return

    def rest(self) -> str:
        """A last line still waiting for its newline (shown once the run is over), else ``""``."""
        return self._tail.pending.decode("utf-8", errors="replace")


def read_run_state(run_dir: Path) -> RunState:
    """Reduce ``run_dir/events.jsonl`` (missing file: an empty state)."""
    events = RunEvents(run_dir)
    events.drain()
    return events.state


def read_tail_state(run_dir: Path, max_bytes: int = 64 << 10) -> RunState:
    """The reduction of only the last ``max_bytes`` of ``events.jsonl`` (its first, cut line left
    out): enough for a run's latest epoch and step without parsing a long history (the Runs table
    shows the last epoch's train loss of every run, most of them never followed)."""
    path = Path(run_dir) / EVENTS_FILE
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - max_bytes)
            fh.seek(start)
            chunk = fh.read(size - start)
    except OSError:
        return RunState()
    lines = chunk.split(b"\n")
    if start:
        lines = lines[1:]  # began mid-line
    state = RunState()
    for raw in lines[:-1]:  # the last piece has no newline yet (empty when the file ends with one)
        state = apply_event(state, parse_line(raw))
    return state


def append_event(run_dir: Path, event: dict[str, Any]) -> None:
    """Append one protocol event (from ``engine.schema.events.make_event``) to the run's stream.

    One O_APPEND write of a whole line, so it never interleaves with the engine's own lines."""
    append_line(Path(run_dir) / EVENTS_FILE, encode(event))


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
