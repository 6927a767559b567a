"""A log view that follows a run's stdout/stderr files, reading only appended bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from textual.widgets import Log

# What a researcher scrolls for first when a run misbehaves.
PROBLEM = re.compile(r"Traceback|\bnan\b|CUDA out of memory|OutOfMemoryError|non-finite", re.IGNORECASE)


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def readable_line(line: str) -> str | None:
    """How a stdout line reads in the log view; None hides it.

    The engine echoes its event stream to stdout. Those JSON lines are what the charts are made of;
    in the log they are shown as short sentences (steps are hidden: the step-loss chart has them).
    Anything else (prints, warnings, tracebacks) is shown exactly as written.
    """
    if not line.startswith('{"v":'):
        return line
    try:
        event = json.loads(line)
    except ValueError:
        return line
    kind = event.get("type")
    if kind == "step":
        return None
    if kind == "epoch":
        train, ev = event.get("train") or {}, event.get("eval") or {}
        epoch = event.get("epoch")
        shown = epoch + 1 if isinstance(epoch, int) else "?"
        return (
            f"epoch {shown}: train loss {_num(train.get('loss'))} acc1 {_num(train.get('acc1'), 2)}"
            f" | eval loss {_num(ev.get('loss'))} acc1 {_num(ev.get('acc1'), 2)}"
            f" | best {_num(event.get('best_acc1'), 2)}"
        )
    if kind == "log":
        return f"[{event.get('level', 'info')}] {event.get('msg', '')}"
    if kind == "run_started":
        return f"run started on {event.get('device', '?')}: {event.get('total_epochs', '?')} epochs"
    if kind == "run_finished":
        error = f": {event['error']}" if event.get("error") else ""
        return f"run finished: {event.get('status', '?')}{error}"
    if kind == "checkpoint":
        return f"checkpoint {event.get('path', '')}" + (" (best)" if event.get("is_best") else "")
    if kind == "artifact":
        return f"artifact {event.get('kind', '')}: {event.get('path', '')}"
    return line


def file_has_problem(path: Path, limit: int = 64 << 20) -> bool:
    """Whether a log file holds a Traceback / NaN / out-of-memory line (reads at most ``limit`` bytes)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return False
    return any(
        PROBLEM.search(shown) for line in text.splitlines() if (shown := readable_line(line)) is not None
    )


class RunLog(Log):
    """Follows one text file; ``jump_to_problem`` scrolls to the first suspicious line."""

    DEFAULT_CSS = """
    RunLog { height: 1fr; }
    """

    def __init__(self, path: Path | None = None, **kwargs: object) -> None:
        super().__init__(highlight=False, max_lines=20_000, **kwargs)  # type: ignore[arg-type]
        self.path = path
        self._offset = 0
        self._partial = ""
        self._count = 0
        self._problem_line: int | None = None

    def follow(self, path: Path) -> None:
        """Switch to another file, starting from its beginning."""
        self.path = path
        self._offset = 0
        self._partial = ""
        self._count = 0
        self._problem_line = None
        self.clear()
        self.poll()

    def poll(self) -> bool:
        """Append what was written since the last call; True when something arrived."""
        if self.path is None:
            return False
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read(4 << 20)
        except FileNotFoundError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        # Progress bars rewrite one line with \r: keep only what the line finally showed.
        lines = text.split("\n")
        self._partial = lines.pop()
        shown = (readable_line(line.rsplit("\r", 1)[-1]) for line in lines)
        lines = [line for line in shown if line is not None]
        for line in lines:
            if self._problem_line is None and PROBLEM.search(line):
                self._problem_line = self._count
            self._count += 1
        self.write_lines(lines)
        return True

    @property
    def problem_line(self) -> int | None:
        return self._problem_line

    def jump_to_problem(self) -> bool:
        """Scroll to the first Traceback / NaN / out-of-memory line; False if there is none."""
        if self._problem_line is None:
            return False
        self.auto_scroll = False
        self.scroll_to(y=self._problem_line, animate=False)
        return True
