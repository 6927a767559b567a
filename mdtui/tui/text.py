"""User text on screen: never read as markup, no terminal control characters (cuts: mdtui.system.text).

Experiment names such as ``kft-cbs-refl[optim.lr=1e-05]``, error messages and paths come from the
user's files; Textual reads ``[...]`` in plain strings as markup (a crash, or text that vanishes), and
a raw escape character would reach the terminal. Everything the TUI shows from those sources passes
through here.
"""

from __future__ import annotations

from rich.text import Text

from mdtui.system.text import escape_control


def visible(text: object) -> str:
    """``text`` with control characters shown as ``\\x1b`` and friends (newlines and tabs kept): the
    CLI's escaping (mdtui.system.text.escape_control), so both show a hostile name alike."""
    return escape_control(text, multiline=True)


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
