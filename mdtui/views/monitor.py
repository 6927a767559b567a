"""Follow the event streams of many runs cheaply (headless; the TUI and `mdtui run` use it).

Each run's events are read incrementally by a ``RunEvents`` follower (mdtui/runs/rundir.py) that
remembers its byte offset, so no file is ever parsed twice; a finished run is drained once and then
only its file's size is looked at. The state of every run is the pure reduction of its events.

A run may live again after it ended: ``mdtui run --resume``, the scheduler or a Slurm requeue start a
new attempt in the same directory, which appends a new ``run_started`` (the reducer starts the new
session afresh). Whoever started it, the events file grows past what was drained, so a drained run
whose file grew is followed again; a file that shrank or was replaced (another inode) is a new
stream and is read again from its start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.schema.events import RunState
from mdtui.runs.rundir import RunEvents


def _file_id(path: Path) -> tuple[int, int] | None:
    """(inode, size) of an events file, None when it is not there (yet)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size)


@dataclass
class _Followed:
    events: RunEvents
    run_dir: Path
    drained: bool = False  # finished and read to the end: only its size is checked
    seen: tuple[int, int] | None = None  # (inode, size) when it was drained

    def new_attempt(self) -> bool:
        """Has the drained file changed since (a resumed or requeued run appends, a restart rewrites)?"""
        return _file_id(self.events.path) != self.seen


class RunMonitor:
    """Keeps a ``RunState`` per run id, updated from appended bytes only.

    Thread-safe: the TUI's refresh worker polls every run while the UI thread may follow one more
    (a run detail opened on a run the view did not follow yet).
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Followed] = {}
        self._lock = threading.RLock()

    def follow(self, run_id: str, run_dir: Path) -> None:
        with self._lock:
            if run_id not in self._runs:
                self._runs[run_id] = _Followed(RunEvents(run_dir, run_id), Path(run_dir))

    def forget(self, keep: Iterable[str]) -> None:
        """Stop following runs not in ``keep`` (they left the view)."""
        keep_set = set(keep)
        with self._lock:
            for run_id in [r for r in self._runs if r not in keep_set]:
                del self._runs[run_id]

    def poll(self, finished: Iterable[str] = ()) -> set[str]:
        """Read what every followed run appended; return the ids whose state changed.

        ``finished`` names runs the index already knows are over: they are read to the end once
        more (the engine may have flushed its last lines just before exiting) and from then on
        only their file's size is checked: one ``stat``, until a new attempt writes to it.
        """
        done = set(finished)
        changed: set[str] = set()
        with self._lock:
            for run_id, followed in self._runs.items():
                if followed.drained:
                    if not followed.new_attempt():
                        continue
                    self._restart_if_rewritten(run_id, followed)
                    followed.drained = False
                if run_id in done:
                    # stat before reading: what is appended meanwhile is seen as new at the next poll
                    followed.seen = _file_id(followed.events.path)
                    if followed.events.drain():
                        changed.add(run_id)
                    followed.drained = True
                elif followed.events.poll():
                    changed.add(run_id)
        return changed

    def _restart_if_rewritten(self, run_id: str, followed: _Followed) -> None:
        """A file shorter than what was read, or another file under the same name: read it anew."""
        now = _file_id(followed.events.path)
        was = followed.seen
        if now is None or was is None or now[0] != was[0] or now[1] < was[1]:
            followed.events = RunEvents(followed.run_dir, run_id)

    def state(self, run_id: str) -> RunState | None:
        with self._lock:
            followed = self._runs.get(run_id)
            return followed.events.state if followed else None

    def states(self) -> dict[str, RunState]:
        with self._lock:
            return {run_id: f.events.state for run_id, f in self._runs.items()}
