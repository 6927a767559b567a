"""Terminal-safe text: control characters made visible, widths in terminal cells, visible cuts.

Every piece of user text mdtui prints (experiment and group names, notes, paths, config values, error
messages) can hold bytes a terminal obeys: ``"a\\x1b[31mred"`` would colour the user's terminal,
``"\\r"`` can overwrite a line, U+202E reverses what follows. ``escape_control`` shows them as
``\\x1b``-style escapes instead (``\\n``, ``\\t``, ``\\r`` for the usual three). Cutting text
to a width always leaves a visible ``…``; names are cut in the middle because the end of a name (a
sweep suffix, a run id's tail) is what tells siblings apart.

Stdlib only: the CLI (through ``mdtui.system.terminal``) and the TUI can both use it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable

ELLIPSIS = "…"

# C0 controls, DEL, C1 controls (U+009B is a one-byte CSI to some terminals), and the Unicode
# direction overrides/isolates that reorder what a reader sees (U+200E/F marks, U+202A-E, U+2066-9).
_CONTROL_CLASS = "\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROL_CLASS}]")


_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_one(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: object, *, multiline: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``).

    ``multiline`` keeps newlines and tabs (for multi-line messages); otherwise they are escaped too,
    so one value stays on one line of a table.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # every character escaped here is unprintable (Cc or Cf): the common fast path
        return s
    if not multiline:
        return _CONTROL.sub(_escape_one, s)
    return _CONTROL.sub(lambda m: m.group() if m.group() in "\n\t" else _escape_one(m), s)


def char_width(ch: str) -> int:
    """Terminal cells of one character: 2 for East Asian wide/fullwidth, 0 for combining marks."""
    if ch.isascii():
        return 1 if ch.isprintable() else 0
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """Terminal cells ``text`` takes on one line (the widest line when it has several)."""
    if "\n" in text:
        return max(cell_width(line) for line in text.split("\n"))
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def _head(text: str, cells: int) -> str:
    """The longest start of ``text`` that fits in ``cells``."""
    used = 0
    for i, ch in enumerate(text):
        used += char_width(ch)
        if used > cells:
            return text[:i]
    return text


def _tail(text: str, cells: int) -> str:
    """The longest end of ``text`` that fits in ``cells``."""
    used = 0
    for i in range(len(text) - 1, -1, -1):
        used += char_width(text[i])
        if used > cells:
            return text[i + 1 :]
    return text


def ellipsize(text: str, width: int, *, middle: bool = False) -> str:
    """``text`` cut to at most ``width`` cells with a visible ``…`` (unchanged when it fits).

    ``middle`` keeps the start and the (longer) end: ``r32-c…old=0.5]`` (``middle_cut``).
    """
    if cell_width(text) <= width:
        return text
    if width <= 0:
        return ""
    room = width - 1
    if not middle:
        return _head(text, room) + ELLIPSIS
    return middle_cut(text, width)


def middle_cut_at(text: str, width: int, keep_end: int | None = None) -> tuple[int, int]:
    """How many characters of the start and of the end of ``text`` stay when it is cut in the middle
    to ``width`` cells (one of them the ``…``); ``(len(text), 0)`` when it fits.

    ``keep_end``: the cells of the end kept; by default a little more than half of what fits, since
    sweep points and run ids differ at their ends (``…[loss.gamma=2]``, ``…-ab12``). The one rule for
    a middle cut: ``middle_cut`` uses it on strings, the TUI's cells on styled text.
    """
    if cell_width(text) <= width:
        return len(text), 0
    room = max(0, width - 1)
    tail_cells = min(room, keep_end if keep_end is not None else (room + 1) // 2 + room // 6)
    return len(_head(text, room - tail_cells)), len(_tail(text, tail_cells)) if tail_cells else 0


def middle_cut(text: str, width: int, keep_end: int | None = None) -> str:
    """``text`` in at most ``width`` cells, cut in the middle: the start and the distinguishing end
    stay (``middle_cut_at``)."""
    if width <= 0:
        return ""
    head, tail = middle_cut_at(text, width, keep_end)
    if tail == 0 and head == len(text):
        return text
    return text[:head] + ELLIPSIS + (text[len(text) - tail :] if tail else "")


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
    default_keep = middle_cut_at("x" * (width + 1), width)[1]
    for group in groups.values():
        if len(group) < 2 or width < 3:
            continue
        for keep in range(default_keep + 1, width - 1):
            trial = {t: middle_cut(t, width, keep_end=keep) for t in group}
            if len(set(trial.values())) == len(group):
                cuts.update(trial)
                break
        else:  # too narrow to keep the end that far: drop what the group shares at the start instead
            shared = len(os.path.commonprefix(group))
            trial = {t: ELLIPSIS + middle_cut(t[shared:], width - 1) for t in group}
            if len(set(trial.values())) == len(group):
                cuts.update(trial)
    return cuts


# An expanded sweep name: ``table[key=value,key=value]``; values may hold commas (lists), keys do not.
_SWEEP_NAME = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<point>.+=.*)\](?P<rest>[^\[\]]*)$")
_NEXT_KEY = re.compile(r",(?=[A-Za-z_][\w.\-]*=)")


def _sweep_forms(point: str) -> list[str]:
    """Shorter spellings of a sweep point, most informative first: last key parts, then values."""
    pairs = [p.partition("=") for p in _NEXT_KEY.split(point)]
    short = [k.rsplit(".", 1)[-1] for k, _, _ in pairs]
    forms = []
    if len(set(short)) == len(short):
        forms.append(",".join(f"{k}={v}" for k, (_, _, v) in zip(short, pairs, strict=True)))
    forms.append(",".join(v for _, _, v in pairs))
    return forms


def shorten_name(name: str, width: int) -> str:
    """``name`` within ``width`` cells, keeping what tells it apart from its siblings.

    A sweep name keeps its point whole as long as it can: keys shortened to their last part
    (``r32-refl[threshold=0.4]``), then the table name cut in the middle, then the values alone
    (``r32…[0.4,1e-05]``). Anything else is cut in the middle.
    """
    if cell_width(name) <= width:
        return name
    match = _SWEEP_NAME.match(name)
    if match:
        base, rest = match["base"], match["rest"]
        for point, least_base in zip(_sweep_forms(match["point"]), (6, 3), strict=False):
            suffix = f"[{point}]{rest}"
            room = width - cell_width(suffix)
            if room >= min(least_base, cell_width(base)):
                return ellipsize(base, room, middle=True) + suffix
    return ellipsize(name, width, middle=True)


def fit_widths(
    natural: list[int], floors: list[int], total: int, priority: list[int] | None = None
) -> list[int] | None:
    """Column widths summing to at most ``total``; None when even the ``floors`` do not fit.

    ``natural`` is what each column needs, ``floors`` the least each may get (equal to natural for a
    column that must not be cut). Starting from the floors, the cells there are go to the columns of
    the highest ``priority`` first; among equals the narrowest are served first (water-filling), so
    a cut always falls on the widest.
    """
    floors = [min(f, n) for f, n in zip(floors, natural, strict=True)]
    if sum(natural) <= total:
        return list(natural)
    if sum(floors) > total:
        return None
    levels = priority or [0] * len(natural)
    widths = list(floors)
    spare = total - sum(floors)
    for level in sorted(set(levels), reverse=True):
        members = [i for i, p in enumerate(levels) if p == level]
        spare = _water_fill(widths, natural, members, spare)
    return widths


def _water_fill(widths: list[int], natural: list[int], members: list[int], spare: int) -> int:
    """Grow ``widths[members]`` towards ``natural`` with ``spare`` cells, lowest first; the rest left."""
    need = sum(natural[i] - widths[i] for i in members)
    if need <= spare:
        for i in members:
            widths[i] = natural[i]
        return spare - need
    # The largest cap c with sum(clamp(width, c, natural) - width) <= spare.
    lo, hi = 0, max(natural[i] for i in members)
    while lo < hi:
        cap = (lo + hi + 1) // 2
        if sum(max(0, min(natural[i], cap) - widths[i]) for i in members) <= spare:
            lo = cap
        else:
            hi = cap - 1
    for i in members:
        grown = max(widths[i], min(natural[i], lo))
        spare -= grown - widths[i]
        widths[i] = grown
    for i in members:  # the few cells the cap left over, left to right
        if spare > 0 and widths[i] < natural[i]:
            widths[i] += 1
            spare -= 1
    return spare
