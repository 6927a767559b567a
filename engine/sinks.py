"""Where the engine's events go: ``events.jsonl`` plus the real stdout, or a list in tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from engine.schema.events import encode, make_event


class EventSink:
    """Writes each event as one flushed JSON line to a file and, optionally, a stream.

    ``step`` events are throttled to ``step_events_per_second``; callers ask ``want_step()``
    first so that they only build a step event (and sync the device for its loss) when it will
    be written.
    """

    def __init__(
        self,
        run_id: str,
        path: str | Path | None = None,
        stream: TextIO | None = None,
        step_events_per_second: float = 10.0,
    ) -> None:
        self.run_id = run_id
        self._file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115
        if self._file is not None and _ends_torn(Path(path)):
            # a killed earlier session left half a line: end it, or our first event would be glued to it
            self._file.write("\n")
            self._file.flush()
        self._stream = stream
        self._min_step_gap = 1.0 / step_events_per_second if step_events_per_second > 0 else float("inf")
        self._last_step_t = float("-inf")

    def want_step(self) -> bool:
        return time.monotonic() - self._last_step_t >= self._min_step_gap

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        if type_ == "step":
            self._last_step_t = time.monotonic()
        event = make_event(type_, self.run_id, **fields)
        self.write(event)
        return event

    def log(self, msg: str, level: str = "info") -> None:
        self.emit("log", level=level, msg=msg)

    def write(self, event: dict[str, Any]) -> None:
        line = encode(event) + "\n"
        for out in (self._file, self._stream):
            if out is None:
                continue
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                # A closed stdout (the reader went away) must not kill a run; the file is the truth.
                if out is self._stream:
                    self._stream = None
                else:
                    raise

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_torn(path: Path) -> bool:
    """True when ``path`` is non-empty and does not end with a newline."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                return False
            fh.seek(-1, 2)
            return fh.read(1) != b"\n"
    except OSError:
        return False


class ListSink(EventSink):
    """Keeps events in memory (tests). Step events are not throttled unless a rate is given."""

    def __init__(self, run_id: str = "test", step_events_per_second: float | None = None) -> None:
        super().__init__(run_id, step_events_per_second=step_events_per_second or 1.0)
        if step_events_per_second is None:
            self._min_step_gap = 0.0
        self.events: list[dict[str, Any]] = []

    def write(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]


class NullSink(EventSink):
    """Discards everything (benchmarks)."""

    def __init__(self) -> None:
        super().__init__("bench", step_events_per_second=0.0)
        self._min_step_gap = float("inf")

    def want_step(self) -> bool:
        return False

    def write(self, event: dict[str, Any]) -> None:
        pass
