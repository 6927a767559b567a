"""``terminal.fitted_text``: a fitted table drawn line by line shows what the Rich table shows."""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text

from mdtui.system.terminal import Column, SafeConsole, fit_table, fitted_text, plain_table, rich_table

COLUMNS = (
    Column("run", cut="middle", min_width=10, grow=1),
    Column("experiment", cut="middle", min_width=12, grow=2),
    Column("status", cut="none"),
    Column("best acc1", cut="none", justify="right"),
    Column("note", cut="end", min_width=8, drop=5),
)
ROWS = [
    [
        "20240101-000166-270f",
        "g9-refl[loss.threshold=0.7,optim.lr=0.0005]",
        Text("completed", style="green"),
        "65.50%",
        "ok",
    ],
    ["20240101-000166-270e", "short", Text("failed", style="red"), "–", "a long note\x1b[31m that is cut"],
    ["r3", "two\nlines", Text("lost", style="red"), "1.00%", Text.assemble(("mixed", "bold"), " spans")],
]


def _rich_lines(layout, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(rich_table(COLUMNS, ROWS, layout), crop=False)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


def test_fitted_text_shows_what_the_rich_table_shows() -> None:
    for width in (200, 60, 50):
        layout = fit_table(COLUMNS, ROWS, width)
        assert not layout.overflow
        plain = SafeConsole(file=io.StringIO(), width=width, color_system=None)
        assert fitted_text(plain, COLUMNS, ROWS, layout).splitlines() == _rich_lines(layout, width), width


def test_a_table_wider_than_the_terminal_keeps_its_numbers_whole() -> None:
    # the narrowest layout is still too wide: its lines are left for the terminal to wrap, and a
    # number is never cut (Rich would squeeze "best acc1" into "best ac…")
    layout = fit_table(COLUMNS, ROWS, 30)
    assert layout.overflow
    text = fitted_text(SafeConsole(file=io.StringIO(), width=30, color_system=None), COLUMNS, ROWS, layout)
    assert "best acc1" in text.splitlines()[0] and "65.50%" in text


def test_fitted_text_colours_styled_cells_on_a_colour_terminal_and_escapes_controls() -> None:
    layout = fit_table(COLUMNS, ROWS, 200)
    colour = SafeConsole(file=io.StringIO(), width=200, force_terminal=True, color_system="standard")
    text = fitted_text(colour, COLUMNS, ROWS, layout)
    lines = text.splitlines()
    assert lines[0].startswith("\x1b[1mrun\x1b[0m")  # bold header
    assert "\x1b[32mcompleted\x1b[0m" in lines[1] and "\x1b[31mfailed\x1b[0m" in lines[2]
    assert "\x1b[1mmixed\x1b[0m spans" in lines[3]  # spans survive
    assert "\\x1b[31m" in lines[2] and "\x1b[31m that" not in text  # a note cannot colour the terminal


def test_plain_table_aligns_every_value_in_full_and_splits_multi_line_cells() -> None:
    lines = plain_table(COLUMNS, ROWS).splitlines()
    assert len(lines) == 1 + 3 + 1  # header, three rows, the second line of "two\nlines"
    status_at = lines[0].index("status")
    assert [
        line.index(word) for line, word in zip(lines[1:4], ("completed", "failed", "lost"), strict=True)
    ] == [status_at] * 3
    assert lines[4].strip() == "lines" and lines[4].index("lines") == lines[0].index("experiment")
    acc_end = lines[0].index("best acc1") + len("best acc1")
    assert [line.index(v) + len(v) for line, v in zip(lines[1:4], ("65.50%", "–", "1.00%"), strict=True)] == [
        acc_end
    ] * 3
    assert "g9-refl[loss.threshold=0.7,optim.lr=0.0005]" in lines[1]  # nothing cut in a pipe
    assert "note\\x1b[31m that is cut" in lines[2] and "\x1b" not in "".join(lines)
