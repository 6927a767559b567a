"""Follow the event streams of many runs cheaply (headless; the TUI and `mdtui run` use it).

Each run's events are read incrementally by a ``RunEvents`` follower (mdtui/runs/rundir.py) that
remembers its byte offset, so no file is ever parsed twice; a finished run is drained once and then
never read again. The state of every run is the pure reduction of its events.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.schema.events import FINAL_STATUSES, RunState
from mdtui.runs.rundir import RunEvents


@dataclass
class _Followed:
    events: RunEvents
    drained: bool = False  # finished and read to the end: no more reads


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
                self._runs[run_id] = _Followed(RunEvents(run_dir, run_id))

    def forget(self, keep: Iterable[str]) -> None:
        """Stop following runs not in ``keep`` (they left the view)."""
        keep_set = set(keep)
        with self._lock:
            for run_id in [r for r in self._runs if r not in keep_set]:
                del self._runs[run_id]

    def poll(self, finished: Iterable[str] = ()) -> set[str]:
        """Read what every followed run appended; return the ids whose state changed.

        ``finished`` names runs the index already knows are over: they are read to the end once
        more (the engine may have flushed its last lines just before exiting) and then dropped
        from polling.
        """
        done = set(finished)
        changed: set[str] = set()
        with self._lock:
            for run_id, followed in self._runs.items():
                if followed.drained:
                    continue
                if followed.events.poll():
                    changed.add(run_id)
                if run_id in done or followed.events.state.status in FINAL_STATUSES:
                    followed.drained = run_id in done
        return changed

    def state(self, run_id: str) -> RunState | None:
        with self._lock:
            followed = self._runs.get(run_id)
            return followed.events.state if followed else None

    def states(self) -> dict[str, RunState]:
        with self._lock:
            return {run_id: f.events.state for run_id, f in self._runs.items()}
