"""One formatter per value kind: accuracies and knob values read the same in the CLI, the TUI and
RESULTS.md (mdtui/system/formats.py)."""

from __future__ import annotations

from mdtui.system.formats import fmt_pct, format_knobs, format_value


def test_accuracies_in_each_place() -> None:
    from mdtui.commands.common import fmt_pct as cli_pct
    from mdtui.results.log import _pct as results_pct
    from mdtui.tui.widgets.cells import fmt_pct as cell_pct

    assert (cli_pct(61.234), cli_pct(None)) == ("61.23%", "-")
    assert (cell_pct(61.234), cell_pct(None)) == ("61.23", "")  # the column header names the unit
    assert (results_pct(61.234), results_pct(None)) == ("61.23%", "–")
    assert fmt_pct(7, digits=1) == "7.0%" and fmt_pct(True) == "-"  # a flag is not an accuracy


def test_knobs_read_as_experiments_toml_spells_them_everywhere() -> None:
    from mdtui.results import log
    from mdtui.views import dashboard

    knobs = {
        "loss.name": "refl",
        "optim.nesterov": True,
        "optim.lr": 1e-05,
        "schedule.milestones": (160, 180),
    }
    text = "loss.name=refl, optim.nesterov=true, optim.lr=1e-05, schedule.milestones=[160, 180]"
    assert format_knobs(knobs) == text
    assert dashboard.format_knobs is log.format_knobs is format_knobs  # TUI and RESULTS.md: one function
    assert format_value({"a": False}) == "{a=false}"
