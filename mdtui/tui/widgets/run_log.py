"""A log view that follows a run's stdout/stderr files, reading only appended bytes.

Lines are wrapped to the width of the view (a traceback's last words matter), so the view never
scrolls sideways. Following the end of the file is a mode the user leaves by scrolling up and
re-enters by scrolling to the end (End / G); it does not depend on where the scrollbar happened to
be when a line arrived (Textual's own rule, which a late horizontal scrollbar could break forever).
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any

from rich.cells import cell_len, chop_cells
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import Log

# What a researcher scrolls for first when a run misbehaves.
PROBLEM = re.compile(r"Traceback|\bnan\b|CUDA out of memory|OutOfMemoryError|non-finite", re.IGNORECASE)
MAX_LINES = 20_000  # file lines kept in the view; the oldest tenth is dropped when full
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # terminal escapes in a log must not reach the screen
WORDS = re.compile(r"\S+\s*|\s+")


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


def wrap_line(line: str, width: int) -> list[str]:
    """``line`` as screen rows of at most ``width`` cells, broken between words where it can be."""
    if width <= 0 or cell_len(line) <= width:
        return [line]
    rows: list[str] = []
    row, used = "", 0
    for word in WORDS.findall(line):
        size = cell_len(word)
        if used + size <= width:
            row, used = row + word, used + size
            continue
        if cell_len(word.rstrip()) <= width - used:  # only its trailing spaces overflow: drop them
            rows.append(row + word.rstrip())
            row, used = "", 0
            continue
        if row:
            rows.append(row.rstrip())
            row, used = "", 0
        pieces = chop_cells(word, width)  # a word longer than a row is cut by cells
        rows.extend(pieces[:-1])
        row, used = pieces[-1], cell_len(pieces[-1])
    if row.strip() or not rows:
        rows.append(row.rstrip())
    return rows


class RunLog(Log):
    """Follows one text file; ``jump_to_problem`` scrolls to the first suspicious line."""

    DEFAULT_CSS = """
    RunLog { height: 1fr; overflow-x: hidden; scrollbar-gutter: stable; scrollbar-size-vertical: 1; }
    """
    BINDINGS = [
        Binding("j", "scroll_down", "Down", show=False),
        Binding("k", "scroll_up", "Up", show=False),
        Binding("g", "scroll_home", "First line", show=False),
        Binding("G", "scroll_end", "Last line", show=False),
    ]

    def __init__(self, path: Path | None = None, **kwargs: object) -> None:
        super().__init__(highlight=False, max_lines=None, auto_scroll=False, **kwargs)  # type: ignore[arg-type]
        self.path = path
        self.following = True
        self._reset()

    def _reset(self) -> None:
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._raw: list[str] = []  # the file's shown lines, unwrapped
        self._rows: list[int] = []  # screen rows each raw line takes at the current width
        self._problem: int | None = None  # index into _raw
        self._wrapped_at = 0

    # ------------------------------------------------------------------ reading

    def follow(self, path: Path) -> None:
        """Switch to another file, starting from its beginning and following its end."""
        self.path = path
        self._reset()
        self.following = True
        self.clear()
        self.poll()

    def poll(self) -> bool:
        """Append what was written since the last call; True when something arrived."""
        if self.path is None:
            return False
        try:
            with open(self.path, "rb") as fh:
                if fh.seek(0, 2) < self._offset:  # truncated or replaced: read it again from the top
                    self._offset = 0
                    self._raw, self._rows, self._problem = [], [], None
                    self._decoder.reset()
                    self._partial = ""
                    self.clear()
                fh.seek(self._offset)
                chunk = fh.read(4 << 20)
        except OSError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        # An incremental decoder: a character split across two reads is not turned into "��".
        text = self._partial + self._decoder.decode(chunk)
        lines = text.split("\n")
        self._partial = lines.pop()
        # Progress bars rewrite one line with \r: keep only what the line finally showed.
        shown = (readable_line(line.rsplit("\r", 1)[-1]) for line in lines)
        self._append([CONTROL.sub("�", line.expandtabs()) for line in shown if line is not None])
        return True

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        for line in lines:
            if self._problem is None and PROBLEM.search(line):
                self._problem = len(self._raw)
            self._raw.append(line)
        if len(self._raw) > MAX_LINES:
            drop = len(self._raw) - MAX_LINES + MAX_LINES // 10
            del self._raw[:drop]
            self._problem = None if self._problem is None or self._problem < drop else self._problem - drop
            self._rewrap()
            return
        width = self._wrap_width()
        rows: list[str] = []
        for line in lines:
            wrapped = wrap_line(line, width)
            self._rows.append(len(wrapped))
            rows.extend(wrapped)
        self.write_lines(rows, scroll_end=False)
        self._keep_following()

    # ------------------------------------------------------------------ layout and scrolling

    def _wrap_width(self) -> int:
        return max(self.scrollable_content_region.width, 0)

    def _rewrap(self) -> None:
        """Lay every line out again at the current width (after a resize, or dropping old lines)."""
        width = self._wrap_width()
        self._wrapped_at = width
        following = self.following
        rows: list[str] = []
        self._rows = []
        for line in self._raw:
            wrapped = wrap_line(line, width)
            self._rows.append(len(wrapped))
            rows.extend(wrapped)
        self.clear()
        self.write_lines(rows, scroll_end=False)
        self.following = following
        self._keep_following()

    def on_resize(self, event: Resize) -> None:
        if self._wrap_width() != self._wrapped_at:
            self._rewrap()

    def _keep_following(self) -> None:
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def action_scroll_end(self) -> None:
        """End / G: follow again, at once (an animated scroll would end short of lines that arrive meanwhile)."""
        self.following = True
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(new_value) >= self.max_scroll_y:
            self.following = True  # at the end (End, G, or scrolled down to it): follow again
        elif new_value < old_value:
            self.following = False  # the user scrolled up to read: stay there

    # ------------------------------------------------------------------ problems

    @property
    def file_lines(self) -> int:
        """Lines of the file shown (before wrapping)."""
        return len(self._raw)

    @property
    def problem_line(self) -> int | None:
        """Screen row where the first Traceback / NaN / out-of-memory line starts."""
        if self._problem is None:
            return None
        return sum(self._rows[: self._problem])

    def jump_to_problem(self) -> bool:
        """Scroll to the first Traceback / NaN / out-of-memory line; False if there is none."""
        row = self.problem_line
        if row is None:
            return False
        self.following = False
        self.scroll_to(y=row, animate=False, immediate=True)
        self.following = row >= self.max_scroll_y
        return True
