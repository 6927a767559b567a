"""Printing for a terminal or a pipe: a console that shows user text as text, and fitted tables.

``SafeConsole`` is the Rich console every CLI verb prints through. It reads no markup unless a call
asks for it (experiment names such as ``x[optim.lr=1e-05]`` are not styles) and it escapes control
characters in everything it writes, whatever the call site did, so a name in experiments.toml can
never drive the user's terminal.

``Column`` / ``fit_table`` / ``rich_table`` / ``plain_table`` lay out a table: on a terminal it fits the
width with visible cuts (names cut in the middle, values at the end, numbers never: a column is
dropped instead, and the caller says which); in a pipe every value is printed in full.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from mdtui.system.text import cell_width, ellipsize, escape_control, fit_widths, shorten_name

Cell = str | Text


class SafeConsole(Console):
    """A Rich console with markup off by default and every control character shown escaped."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("highlight", False)
        super().__init__(*args, **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        # The one place all printed text passes through before it becomes bytes: Rich's own control
        # sequences (segments flagged ``control``) and style codes (added from ``style`` after this)
        # pass; any control character inside text is shown as an escape instead.
        safe = (
            seg
            if seg.control or seg.text.isprintable()
            else Segment(escape_control(seg.text, multiline=True), seg.style)
            for seg in buffer
        )
        return super()._render_buffer(safe)


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (a person reading) rather than a pipe or file (a program)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- fitted tables


@dataclass(frozen=True)
class Column:
    """How a column gives way when the table is too wide.

    ``cut``: ``"middle"`` for names (``shorten_name``: a sweep point stays, the rest is cut in the
    middle), ``"end"`` for other text,
    ``"none"`` for numbers and anything whose cut would read as a different value. ``min_width``: a cut
    column gets at least this many cells. ``drop``: when even the minimums do not fit, columns are
    dropped, highest ``drop`` first; 0 is never dropped. ``grow``: cut columns of a higher ``grow``
    get the room there is first.
    """

    header: str
    cut: Literal["middle", "end", "none"] = "end"
    min_width: int = 8
    drop: int = 0
    justify: Literal["left", "right"] = "left"
    grow: int = 0


@dataclass
class Layout:
    """The columns kept (indices into the table's columns), their widths, and the headers dropped.

    ``overflow``: even the narrowest table is wider than asked (the terminal will wrap its lines).
    """

    keep: list[int]
    widths: list[int]
    dropped: list[str] = field(default_factory=list)
    overflow: bool = False

    @property
    def fits(self) -> bool:
        """Every column shown, within the width."""
        return not self.dropped and not self.overflow


def _plain(cell: Cell) -> str:
    """The text a cell shows: control characters escaped (tables print user text)."""
    # Newlines stay: a cell may have several lines on purpose (folded values); tabs would misalign.
    text = escape_control(cell.plain if isinstance(cell, Text) else cell, multiline=True)
    return text.replace("\t", "\\t")


def natural_widths(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> list[int]:
    """The cells each column needs to show its header and every value in full."""
    widths = [cell_width(c.header) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_width(_plain(cell)))
    return widths


def fit_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int, *, gap: int = 2
) -> Layout:
    """Widths for ``columns`` within ``width`` cells (``gap`` between columns), dropping if needed."""
    natural = natural_widths(columns, rows)
    keep = list(range(len(columns)))
    dropped: list[str] = []
    while True:
        floors = [
            natural[i] if columns[i].cut == "none" else min(natural[i], columns[i].min_width) for i in keep
        ]
        widths = fit_widths(
            [natural[i] for i in keep],
            floors,
            width - gap * (len(keep) - 1),
            [columns[i].grow for i in keep],
        )
        if widths is not None:
            return Layout(keep, widths, dropped)
        candidates = [i for i in keep if columns[i].drop > 0]
        if not candidates:
            # Nothing more may go: show the minimums and let the terminal wrap the line.
            return Layout(keep, floors, dropped, overflow=True)
        victim = max(candidates, key=lambda i: (columns[i].drop, i))
        keep.remove(victim)
        dropped.append(columns[victim].header)


def cut_cell(cell: Cell, width: int, cut: str) -> Cell:
    """``cell`` fitted to ``width`` cells with a visible ``…`` (each line of a multi-line cell)."""
    plain = _plain(cell)
    if cut != "none" and cell_width(plain) > width:
        shorten = shorten_name if cut == "middle" else ellipsize
        plain = "\n".join(shorten(line, width) for line in plain.split("\n"))
    elif isinstance(cell, Text) and plain == cell.plain:
        return cell  # keeps its spans
    return Text(plain, style=cell.style) if isinstance(cell, Text) else plain


def rich_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], layout: Layout, **table_args
) -> Table:
    """A Rich table of the kept columns at their fitted widths; cells already cut, never re-wrapped."""
    table = Table(
        box=None, header_style="bold", pad_edge=False, show_edge=False, padding=(0, 1), **table_args
    )
    for i, w in zip(layout.keep, layout.widths, strict=True):
        col = columns[i]
        table.add_column(
            Text(ellipsize(col.header, w)), width=w, no_wrap=True, overflow="ellipsis", justify=col.justify
        )
    for row in rows:
        table.add_row(
            *(
                _as_text(cut_cell(row[i], w, columns[i].cut))
                for i, w in zip(layout.keep, layout.widths, strict=True)
            )
        )
    return table


def _as_text(cell: Cell) -> Text:
    # A str cell would be parsed for markup by a console that reads it; a Text never is.
    return cell if isinstance(cell, Text) else Text(cell)


def plain_table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], *, gap: int = 2) -> str:
    """Every value in full, columns aligned with spaces, no styles: for pipes and files."""
    # each cell is escaped and measured once (10,000 rows of `mdtui status --all` in a pipe)
    table = [[c.header for c in columns], *([_plain(c) for c in row] for row in rows)]
    sizes = [[cell_width(cell) for cell in cells] for cells in table]
    widths = [max(column) for column in zip(*sizes, strict=True)] if columns else []
    right = [c.justify == "right" for c in columns]
    sep = " " * gap
    lines = []
    for cells, cell_sizes in zip(table, sizes, strict=True):
        if any("\n" in cell for cell in cells):
            lines += _plain_lines(cells, widths, right, sep)
            continue
        parts = [
            " " * (w - n) + cell if r else cell + " " * (w - n)
            for cell, n, w, r in zip(cells, cell_sizes, widths, right, strict=True)
        ]
        lines.append(sep.join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _plain_lines(cells: list[str], widths: list[int], right: list[bool], sep: str) -> list[str]:
    """The lines of one table row whose cells have several lines."""
    split = [cell.split("\n") for cell in cells]
    lines = []
    for k in range(max(len(s) for s in split)):
        parts = []
        for s, w, r in zip(split, widths, right, strict=True):
            part = s[k] if k < len(s) else ""
            pad = " " * (w - cell_width(part))
            parts.append(pad + part if r else part + pad)
        lines.append(sep.join(parts).rstrip())
    return lines


def safe_text(text: object, style: str | None = None) -> Text:
    """User text as a Rich ``Text``: control characters escaped, never read as markup."""
    return Text(escape_control(text), style=style or "")


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> Layout | None:
    """A table on stdout: fitted to the terminal's width (returns how), or in full when piped (None).

    Piped output is for programs and other tools (``| grep``, ``| less -S``): every value whole,
    no styles. A terminal gets the table within ``console.width`` (``fitted_text``); the caller tells the reader
    about ``Layout.dropped`` columns.
    """
    if not stdout_is_terminal():
        console.file.write(plain_table(columns, rows))
        console.file.flush()
        return None
    layout = fit_table(columns, rows, console.width)
    console.file.write(fitted_text(console, columns, rows, layout))
    console.file.flush()
    return layout


def fitted_text(
    console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], layout: Layout
) -> str:
    """What ``rich_table`` shows for ``layout``, as terminal text made line by line.

    A Rich table measures and renders every cell through its layout engine, about 0.7 ms a row:
    7 s for ``mdtui status --all`` over 10,000 runs. Here the widths are fitted and the cells cut
    and escaped already, so padding is all that is left; a styled cell is rendered by the console
    (its colours, or none) once per distinct text and style.
    """
    shown = list(zip(layout.keep, layout.widths, strict=True))
    rendered: dict[tuple[str, str], str] = {}

    def styled(cell: Text, part: str) -> str:
        key = (part, repr((cell.style, cell.spans if part == cell.plain else ())))
        if key not in rendered:
            text = cell if part == cell.plain else Text(part, style=cell.style)  # a cut cell keeps its style
            with console.capture() as capture:
                console.print(text, end="", crop=False, soft_wrap=True)
            rendered[key] = capture.get()
        return rendered[key]

    header = [Text(ellipsize(columns[i].header, w), style="bold") for i, w in shown]
    lines = []
    for cells in (header, *([cut_cell(row[i], w, columns[i].cut) for i, w in shown] for row in rows)):
        texts = [_plain(cell).split("\n") for cell in cells]
        for k in range(max((len(t) for t in texts), default=1)):
            parts = []
            for (i, w), cell, text in zip(shown, cells, texts, strict=True):
                part = text[k] if k < len(text) else ""
                pad = " " * max(0, w - cell_width(part))
                if part and isinstance(cell, Text) and (cell.style or cell.spans):
                    part = styled(cell, part)
                parts.append(pad + part if columns[i].justify == "right" else part + pad)
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"
