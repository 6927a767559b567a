"""The one spelling of run statuses (mdtui/runs/status.py) and its agreement with the engine's protocol."""

from __future__ import annotations

from engine.schema.events import FINAL_STATUSES, RunState
from mdtui.runs.status import FINISHED, INCOMPLETE, LIVE, WAITING, RunStatus, is_status


def test_every_status_is_in_exactly_one_group() -> None:
    groups = [frozenset({RunStatus.CREATED}), WAITING, LIVE, FINISHED]
    for status in RunStatus:
        assert sum(status in g for g in groups) == 1, status
    assert INCOMPLETE < FINISHED and RunStatus.COMPLETED not in INCOMPLETE


def test_the_engine_reports_exactly_the_endings_mdtui_knows() -> None:
    # the protocol is stdlib-only and keeps its own tuple: it must name the same endings
    assert set(FINAL_STATUSES) == {RunStatus.COMPLETED, *INCOMPLETE}
    assert is_status(RunState().status) and RunState().status in LIVE


def test_statuses_compare_and_print_as_their_plain_values() -> None:
    assert RunStatus.LOST == "lost" and f"{RunStatus.LOST}" == "lost" and str(RunStatus.QUEUED) == "queued"
    assert is_status("blocked") and not is_status("finished") and not is_status(None)
