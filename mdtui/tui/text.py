"""User text on screen: never read as markup, no terminal control characters, cut where it tells apart.

Experiment names such as ``kft-cbs-refl[optim.lr=1e-05]``, error messages and paths come from the
user's files; Textual reads ``[...]`` in plain strings as markup (a crash, or text that vanishes), and
a raw escape character would reach the terminal. Everything the TUI shows from those sources passes
through here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: object) -> str:
    """``text`` with control characters shown as ``\\x1b`` and friends (newlines and tabs kept)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def markup_escape(text: object) -> str:
    """``text`` for a place that reads Textual markup, shown exactly as written.

    Textual's markup takes ``\\[`` as a literal bracket and leaves every other backslash alone, so
    escaping each ``[`` is enough (``textual.markup.escape`` leaves ``[$x]`` and ``[A=1]`` alone, which
    the parser then swallows).
    """
    return visible(text).replace("[", "\\[")


def plain(text: object, style: str = "") -> Text:
    """A Rich ``Text`` (never parsed as markup) of user text."""
    return Text(visible(text), style=style)


def one_line(text: object, limit: int = 160) -> str:
    """The first non-empty line of a message (an error, a traceback's last words), at most ``limit`` cells."""
    lines = [line.strip() for line in visible(text or "").splitlines() if line.strip()]
    line = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def middle_cut(text: str, width: int, keep_end: int | None = None) -> str:
    """``text`` in at most ``width`` cells, cut in the middle: the start and the distinguishing end stay.

    Sweep points and run ids differ at their ends (``…[loss.gamma=2]``, ``…-ab12``); cutting the tail
    would make four different rows look the same. ``keep_end`` fixes how much of the end survives
    (default: a little more than half of what fits).
    """
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return "…"
    room = width - 1
    tail = min(room, keep_end if keep_end is not None else _default_keep(width))
    head = room - tail
    return text[:head] + "…" + text[len(text) - tail :]


def distinct_cuts(texts: Iterable[str], width: int) -> dict[str, str]:
    """Each text cut to ``width`` (middle cut) so that different texts stay different.

    Sweep variants differ in the middle as often as at the end (``r32-c10lt-refl-cos[loss.threshold=0.5]``
    and ``r32-c10lt-refl-step[loss.threshold=0.5]``): where the default cuts collide, more of the end
    is kept (and less of the start) until the group tells apart.
    """
    cuts = {t: middle_cut(t, width) for t in set(texts)}
    groups: dict[str, list[str]] = {}
    for text, cut in cuts.items():
        groups.setdefault(cut, []).append(text)
    for group in groups.values():
        if len(group) < 2 or width < 3:
            continue
        for keep in range(_default_keep(width) + 1, width - 1):
            trial = {t: middle_cut(t, width, keep_end=keep) for t in group}
            if len(set(trial.values())) == len(group):
                cuts.update(trial)
                break
        else:  # too narrow to keep the end that far: drop what the group shares at the start instead
            shared = len(os.path.commonprefix(group))
            trial = {t: "…" + middle_cut(t[shared:], width - 1) for t in group}
            if len(set(trial.values())) == len(group):
                cuts.update(trial)
    return cuts


def _default_keep(width: int) -> int:
    room = width - 1
    return min(room, (room + 1) // 2 + room // 6)
