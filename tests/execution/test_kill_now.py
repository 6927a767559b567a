"""A kill asked with no grace ("Kill now" in the TUI) is recorded as such (issue 20, item 5)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.schema.events import RunState
from mdtui.execution.ending import KILLED_AT_ONCE, STOP_REQUEST, EngineEnd, decide, settle
from mdtui.registry.plan import engine_config


@pytest.mark.parametrize(
    ("grace", "error"), [(0.0, KILLED_AT_ONCE), (10.0, "killed (SIGKILL) after the stop grace period")]
)
def test_a_kill_now_is_not_called_a_grace_period_that_ran_out(
    tiny_plan: Any, store: Any, grace: float, error: str
) -> None:
    exp = tiny_plan.experiments["tiny"]
    rec = store.create_run(
        exp, engine_config(tiny_plan, exp, run_id=None, seed=0), seed=0, devices=["cpu"], status="running"
    )
    (Path(rec.run_dir) / STOP_REQUEST).write_text(json.dumps({"t": time.time(), "grace": grace}))
    end = EngineEnd(exit_code=-9, stop_requested=True, killed=True)
    final = settle(store, rec, decide(end), end, RunState())
    assert (final.status, final.error) == ("stopped", error)
