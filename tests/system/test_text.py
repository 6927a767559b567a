"""mdtui.system.text: control characters made visible, widths in cells, cuts that show and keep names apart."""

from __future__ import annotations

import pytest

from mdtui.system.text import cell_width, ellipsize, escape_control, fit_widths, shorten_name


def test_escape_control_shows_every_terminal_control_and_keeps_ordinary_text() -> None:
    assert escape_control("a\x1b[31mred\x9b\x7f\u202egnp.exe") == r"a\x1b[31mred\x9b\x7f\u202egnp.exe"
    assert escape_control("x\ny\tz\r") == r"x\ny\tz\r"
    assert escape_control("line 1\n\tline 2\x07", multiline=True) == "line 1\n\tline 2\\x07"
    for ordinary in ("résumé ρ=100 日本", "r32[loss.threshold=0.4]", "", "a b"):
        assert escape_control(ordinary) == ordinary
    assert escape_control(3.5) == "3.5"


def test_cell_width_counts_wide_and_combining_characters() -> None:
    assert cell_width("abc") == 3 and cell_width("日本") == 4 and cell_width("e\u0301") == 1
    assert cell_width("ab\n日本語") == 6


@pytest.mark.parametrize("width", range(0, 12))
def test_ellipsize_never_exceeds_the_width_and_always_shows_the_cut(width: int) -> None:
    for text in ("resnet50", "cifar100 ρ=100", "日本語のテキスト"):
        for middle in (False, True):
            cut = ellipsize(text, width, middle=middle)
            assert cell_width(cut) <= width
            assert cut == text or (cut.endswith("…") if not middle else "…" in cut) or width == 0


def test_shorten_name_keeps_the_sweep_point_of_siblings_apart() -> None:
    names = [
        f"r32-c10lt-refl-cos[loss.threshold={t},optim.lr={lr}]" for t in (0.5, 0.4) for lr in ("1e-05", 0.1)
    ]
    for width in range(14, 60):
        cut = [shorten_name(n, width) for n in names]
        assert all(cell_width(c) <= width for c in cut)
        assert len(set(cut)) == len(names), (width, cut)
    assert shorten_name(names[0], 43) == "r32-c10lt-refl-cos[threshold=0.5,lr=1e-05]"
    assert shorten_name("x[schedule.milestones=[160,180]]", 26) == "x[milestones=[160,180]]"  # list values
    assert shorten_name("plain-long-experiment-name", 12) == "plai…nt-name"  # the TUI's cut: more end


def test_fit_widths_cuts_the_widest_first_and_serves_priority_first() -> None:
    assert fit_widths([10, 5], [4, 5], 20) == [10, 5]  # fits: untouched
    assert fit_widths([40, 10, 5], [10, 4, 5], 30) == [15, 10, 5]
    assert fit_widths([40, 30, 5], [10, 10, 5], 50) == [23, 22, 5]
    assert fit_widths([40, 30, 5], [10, 10, 5], 50, [1, 0, 0]) == [35, 10, 5]
    assert fit_widths([40, 10, 5], [10, 4, 5], 18) is None  # even the floors are too wide


def test_cli_and_tui_cut_names_in_the_middle_by_one_rule_and_escape_alike() -> None:
    from mdtui.system.text import distinct_cuts, middle_cut
    from mdtui.tui.text import visible
    from mdtui.tui.widgets.cells import render_cell

    name = "r32-c10lt-refl-cos[loss.threshold=0.2]"
    for width in range(6, len(name) + 2):
        cut = middle_cut(name, width)
        assert cell_width(cut) <= width and (cut == name or "…" in cut)
        # a TUI cell (one space of it separates columns) is the same cut
        assert render_cell(name, width + 1, middle=True).plain == cut
    assert middle_cut(name, 20) == "r32-c1…hreshold=0.2]"  # more of the end than of the start
    assert middle_cut("日本語の名前です", 7) == "日…です"  # cut by cells: wide characters count two
    cuts = distinct_cuts(["r32-c10lt-refl-cos[t=0.5]", "r32-c10lt-refl-step[t=0.5]"], 12)
    assert len(set(cuts.values())) == 2
    hostile = "x\x1b[31m\r\u202ey\n\tz"
    assert visible(hostile) == escape_control(hostile, multiline=True) == "x\\x1b[31m\\r\\u202ey\n\tz"
