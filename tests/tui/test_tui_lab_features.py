"""Issue 22 in the TUI: runs that end while it is open are a toast and the terminal bell; the run
detail shows the run's size on disk."""

from __future__ import annotations

from typing import Any

import pytest
import tui_helpers
from tui_helpers import until

from engine.schema.events import RunState
from mdtui.runs.store import RunRecord
from mdtui.tui.app import MdtuiApp
from mdtui.tui.screens.run_detail import summary_text

fake_world = tui_helpers.fake_world  # a fixture, used by name
project = tui_helpers.project  # a fixture, used by name


def toast(app: Any, *words: str) -> Any:
    return next((n for n in app._notifications if all(w in n.message for w in words)), None)


async def test_a_run_that_completes_while_open_is_a_toast_and_a_bell_at_80x24(
    project, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = MdtuiApp(project)
    bells: list[int] = []
    monkeypatch.setattr(app, "bell", lambda: bells.append(1))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        await pilot.press("r")
        done = await until(pilot, lambda: toast(app, "tiny completed", "best acc1 70.00%"), 30)
        assert done.severity == "information" and bells
        rings = len(bells)
        await pilot.pause(1.0)  # later refreshes of the same ended run ring nothing
        assert len(bells) == rings


def test_the_summary_shows_the_size_on_disk_once_there_are_checkpoints() -> None:
    rec = RunRecord(run_id="r1", experiment="tiny", status="completed", devices=["cpu"])
    text = summary_text(RunState(run_id="r1"), rec, disk=47_000_000)
    assert text.splitlines()[2] == "checkpoints 44.8 MiB on disk (mdtui gc frees them)"
    assert "on disk" not in summary_text(RunState(run_id="r1"), rec, disk=0)
