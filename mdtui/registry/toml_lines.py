"""Where each key of a TOML document is written: key path -> (line, column).

``tomllib`` gives values but no positions. Error messages about experiments.toml must name the line
of the offending key, so this module re-reads the (already valid) text with a small scanner that
skips values and records the position of every key: table headers, dotted keys and the keys of
inline tables. Arrays of tables are recorded without an index. Standard library only.

It also finds where a document nests deeper than ``MAX_NESTING`` (arrays, inline tables and dotted
keys together) *before* ``tomllib`` reads it: ``tomllib`` recurses once per level and a few hundred
levels end in a ``RecursionError``, and so would every recursive step after it (merging, copying).
"""

from __future__ import annotations

import bisect
import contextlib
import json
from collections.abc import Callable

KeyPath = tuple[str, ...]
# No experiments file needs more than a handful of levels (doctor.mask.combine_with is 3); a few
# hundred crash the parser. 64 leaves room for anything real.
MAX_NESTING = 64
_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _TooDeep(Exception):
    pass


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.found: dict[KeyPath, tuple[int, int]] = {}
        self.depth = 0  # arrays and inline tables open around the current position
        self.too_deep: tuple[int, int] | None = None  # (line, column) where MAX_NESTING is passed
        self._line_starts = [0] + [n + 1 for n, ch in enumerate(text) if ch == "\n"]

    # ------------------------------------------------------------------ helpers
    def position(self, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._line_starts, index)
        return line, index - self._line_starts[line - 1] + 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.i : self.i + n]

    def skip_blank(self, newlines: bool) -> None:
        """Skip spaces (and newlines and comments when ``newlines``)."""
        while self.i < len(self.text):
            ch = self.text[self.i]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.i += 1
            elif ch == "#":
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            else:
                return

    def record(self, path: KeyPath, index: int) -> None:
        # Prefixes too: `loss.threshold = 0.4` and `[experiment.a.loss]` also say where `loss` / `a` is.
        where = self.position(index)
        for n in range(1, len(path) + 1):
            self.found.setdefault(path[:n], where)

    # ------------------------------------------------------------------ keys
    def key_part(self) -> str:
        ch = self.peek()
        if ch in "\"'":
            start = self.i
            self.skip_string()
            raw = self.text[start : self.i]
            if ch == "'":
                return raw[1:-1]
            try:
                return json.loads(raw)
            except ValueError:
                return raw[1:-1]
        start = self.i
        while self.i < len(self.text) and self.text[self.i] in _BARE:
            self.i += 1
        return self.text[start : self.i]

    def nest(self, levels: int) -> None:
        """Stop scanning where the document passes MAX_NESTING levels."""
        if levels > MAX_NESTING:
            self.too_deep = self.position(self.i)
            raise _TooDeep

    def key_path(self) -> KeyPath:
        parts = [self.key_part()]
        while True:
            self.skip_blank(newlines=False)
            self.nest(len(parts))
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1
            self.skip_blank(newlines=False)
            parts.append(self.key_part())

    # ------------------------------------------------------------------ values
    def skip_string(self) -> None:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            end = self.i + 3
            while True:
                end = self.text.find(quote * 3, end)
                if end < 0:
                    self.i = len(self.text)
                    return
                if quote == '"' and _escaped(self.text, end):
                    end += 1
                    continue
                # a closing delimiter may be followed by up to two more quotes that belong to the string
                while self.text[end + 3 : end + 4] == quote:
                    end += 1
                self.i = end + 3
                return
        end = self.i + 1
        while end < len(self.text):
            ch = self.text[end]
            if ch == "\\" and quote == '"':
                end += 2
                continue
            if ch == quote or ch == "\n":
                break
            end += 1
        self.i = end + 1

    def value(self, path: KeyPath | None) -> None:
        ch = self.peek()
        if ch in "[{":
            self.depth += 1
            self.nest(self.depth)
            try:
                self.container(ch, path)
            finally:
                self.depth -= 1
        elif ch in "\"'":
            self.skip_string()
        else:
            while self.i < len(self.text) and self.text[self.i] not in ",]}\n#":
                self.i += 1

    def container(self, ch: str, path: KeyPath | None) -> None:
        if ch == "[":
            self.items("]", lambda: self.value(None))
        elif ch == "{":
            self.items("}", lambda: self.key_value(path))

    def items(self, close: str, item: Callable[[], None]) -> None:
        """An array's values or an inline table's pairs, up to ``close``."""
        self.i += 1
        while self.i < len(self.text):
            self.skip_blank(newlines=True)
            if self.peek() in (close, ""):
                self.i += 1
                return
            if self.peek() == ",":
                self.i += 1
                continue
            before = self.i
            item()
            if self.i == before:  # a stray closer of the other kind: step over it, never loop on it
                self.i += 1

    def key_value(self, table: KeyPath | None) -> None:
        start = self.i
        key = self.key_path()
        full = None if table is None else table + key
        if full is not None:
            self.nest(len(full))  # dotted keys inside inline tables add up
            self.record(full, start)
        self.skip_blank(newlines=False)
        if self.peek() == "=":
            self.i += 1
        self.skip_blank(newlines=False)
        self.value(full)

    # ------------------------------------------------------------------ document
    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank(newlines=True)
            if self.i >= len(self.text):
                return
            if self.peek() == "[":
                double = self.peek(2) == "[["
                self.i += 2 if double else 1
                self.skip_blank(newlines=False)
                start = self.i
                table = self.key_path()
                self.record(table, start)
                self.i += 2 if double else 1
                continue
            before = self.i
            self.key_value(table)
            if self.i == before:  # never loop on text this scanner does not understand
                self.i += 1


def _escaped(text: str, index: int) -> bool:
    """True when the character at ``index`` is preceded by an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def locate_keys(text: str) -> dict[KeyPath, tuple[int, int]]:
    """Every key path written in ``text`` with its 1-based (line, column); first occurrence wins."""
    return scan(text)[0]


def scan(text: str) -> tuple[dict[KeyPath, tuple[int, int]], tuple[int, int] | None]:
    """(``locate_keys``, the (line, column) where ``text`` nests deeper than MAX_NESTING or None).

    Works on any text, valid TOML or not: what it cannot understand it skips.
    """
    scanner = _Scanner(text)
    with contextlib.suppress(IndexError, ValueError, _TooDeep):
        scanner.document()
    return scanner.found, scanner.too_deep
