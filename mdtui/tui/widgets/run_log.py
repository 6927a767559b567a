"""A log view that follows a run's stdout/stderr files, reading only appended bytes."""

from __future__ import annotations

import re
from pathlib import Path

from textual.widgets import Log

# What a researcher scrolls for first when a run misbehaves.
PROBLEM = re.compile(r"Traceback|\bnan\b|CUDA out of memory|OutOfMemoryError|non-finite", re.IGNORECASE)


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
        lines = [line.rsplit("\r", 1)[-1] for line in lines]
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
