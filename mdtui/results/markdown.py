"""The markdown text of RESULTS.md: escaping, headings, and lock-protected inserts.

The log belongs to people as much as to mdtui, so this module reads only its ATX headings (outside
fenced code) and only ever inserts lines: every change is a read-modify-rename under an ``fcntl``
lock on a lock file next to the log, so concurrent writers never lose or tear each other's lines.
"""

from __future__ import annotations

import re
from pathlib import Path

from mdtui.system.fs import atomic_write_text, file_lock, git_ignored_dir

INCOMPLETE_HEADING = "Incomplete runs"
LOG_PREAMBLE = (
    "# Results\n\n"
    "Written by mdtui: one entry per finished run under its group. Edit freely; mdtui only inserts lines.\n"
)

# --------------------------------------------------------------------------- markdown text

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")
_MD_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included): a log entry is exactly one line."""
    return " ".join(str(text).split())


def md_escape(text: str) -> str:
    """``text`` as literal inline markdown: the characters that start emphasis, code, links or HTML
    (and ``|``, which splits table cells, and ``#``, which would close a heading) get a backslash."""
    return _MD_SPECIAL.sub(r"\\\1", one_line(text))


def md_unescape(text: str) -> str:
    return _MD_UNESCAPE.sub(r"\1", text)


def md_code(text: str) -> str:
    """``text`` as a code span, with a fence longer than any backtick run inside it."""
    text = one_line(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# --------------------------------------------------------------------------- headings (pure)

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


def headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """``(line index, level, unescaped text)`` of every ATX heading outside fenced code blocks."""
    found: list[tuple[int, int, str]] = []
    fence: str | None = None
    for i, line in enumerate(lines):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        match = _ATX.match(line)
        if match:
            found.append((i, len(match.group(1)), md_unescape((match.group(2) or "").strip())))
    return found


def _section_end(lines: list[str], marks: list[tuple[int, int, str]], start: int) -> int:
    """Index just past the last non-blank line of the level-2 section whose heading is ``start``."""
    stop = next((i for i, level, _ in marks if i > start and level <= 2), len(lines))
    end = stop
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def section_lines(text: str, heading: str) -> list[str]:
    """The lines of the ``## heading`` section (empty when there is none)."""
    lines = text.splitlines()
    marks = headings(lines)
    start = next((i for i, level, title in marks if level == 2 and title == one_line(heading)), None)
    return [] if start is None else lines[start + 1 : _section_end(lines, marks, start)]


def _insert_at(lines: list[str], at: int, new: list[str]) -> None:
    # A bullet straight after a paragraph or table would be swallowed by it in some renderers.
    previous = lines[at - 1] if at > 0 else ""
    if previous.strip() and not previous.lstrip().startswith("#") and not _LIST_ITEM.match(previous):
        new = ["", *new]
    lines[at:at] = new


def insert_in_section(text: str, heading: str, line: str) -> str:
    """``text`` with ``line`` added at the end of the ``## heading`` section (created if missing).

    New sections go before ``## Incomplete runs`` so that list stays last. Nothing else changes.
    """
    lines = text.splitlines()
    marks = headings(lines)
    target = next((i for i, level, title in marks if level == 2 and title == one_line(heading)), None)
    if target is not None:
        _insert_at(lines, _section_end(lines, marks, target), [line])
    else:
        incomplete = [i for i, level, title in marks if level == 2 and title == INCOMPLETE_HEADING]
        block = [f"## {md_escape(heading)}", "", line, ""]
        if incomplete and heading != INCOMPLETE_HEADING:
            lines[incomplete[-1] : incomplete[-1]] = block
        else:
            while lines and not lines[-1].strip():
                lines.pop()
            lines += ["", *block] if lines else block
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- the log file


# Runtime files that belong beside the log (its lock) live in this directory, which ignores itself in
# git, so a project's `git status` shows RESULTS.md and never a lock file.
RUNTIME_DIR = ".mdtui"


def lock_path(log: Path) -> Path:
    """The lock every writer of ``log`` takes: ``.mdtui/<log name>.lock`` beside it."""
    return git_ignored_dir(Path(log).parent / RUNTIME_DIR) / f"{Path(log).name}.lock"


def append_entry(log: Path, heading: str, line: str, *, marker: str | None = None) -> bool:
    """Insert ``line`` under ``## heading`` of ``log`` atomically, under the log's lock.

    Returns False (and writes nothing) when ``marker`` is already in that section, so a supervisor
    that records the same run twice does not duplicate it.
    """
    log = Path(log)
    with file_lock(lock_path(log)):
        text = log.read_text(encoding="utf-8") if log.exists() else LOG_PREAMBLE
        if marker and any(marker in existing for existing in section_lines(text, heading)):
            return False
        atomic_write_text(log, insert_in_section(text, heading, line))
    return True


def replace_line(log: Path, old: str, new: str) -> bool:
    """Swap the exact line ``old`` for ``new`` under the lock; False when ``old`` is not there."""
    with file_lock(lock_path(log)):
        if not log.exists():
            return False
        lines = log.read_text(encoding="utf-8").splitlines()
        if old not in lines:
            return False
        lines[lines.index(old)] = new
        atomic_write_text(log, "\n".join(lines) + "\n")
    return True
