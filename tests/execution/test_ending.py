"""The one decision of a run's final status (mdtui/execution/ending.py ``decide``), as a table."""

from __future__ import annotations

import signal

import pytest

from mdtui.execution.ending import EngineEnd, decide
from mdtui.runs.status import RunStatus

S = RunStatus

CASES = [
    # (facts, status, error contains, final) -- the supervisor saw the engine exit
    (EngineEnd("completed", exit_code=0), S.COMPLETED, None, True),
    (EngineEnd("completed", exit_code=1), S.FAILED, "exited with code 1", True),
    (EngineEnd("stopped", exit_code=0, stop_requested=True), S.STOPPED, None, True),
    (EngineEnd(None, exit_code=-9, signal=9, stop_requested=True, killed=True), S.STOPPED, "SIGKILL", True),
    (EngineEnd("completed", exit_code=0, stop_requested=True), S.COMPLETED, None, True),  # it won the race
    (EngineEnd("stopped", exit_code=0), S.FAILED, "did not send", True),
    (EngineEnd(None, exit_code=-9, signal=signal.SIGKILL), S.FAILED, "killed by SIGKILL", True),
    (EngineEnd("failed", "CUDA out of memory", exit_code=1), S.FAILED, "CUDA out of memory", True),
    (EngineEnd(None, exit_code=0), S.FAILED, "without a run_finished", True),
    (EngineEnd(error="cannot start the engine: no such file"), S.FAILED, "cannot start", True),
    (EngineEnd(stop_requested=True), S.STOPPED, None, True),  # stopped before the engine started
    # reconcile: the supervisor is gone, exit codes unknown
    (EngineEnd("completed", supervisor_vanished=True), S.COMPLETED, None, True),
    (EngineEnd("failed", "boom", supervisor_vanished=True), S.FAILED, "boom", True),
    (EngineEnd("stopped", supervisor_vanished=True), S.LOST, "saved last.pt and stopped", True),
    (EngineEnd("stopped", supervisor_vanished=True, stop_requested=True), S.STOPPED, None, True),
    (EngineEnd(None, supervisor_vanished=True), S.LOST, "without writing exit.json", True),
    (EngineEnd(None, supervisor_vanished=True, engine_alive=True, engine_pid=42), S.LOST, "pid 42", False),
]


@pytest.mark.parametrize(("end", "status", "error", "final"), CASES)
def test_one_decision_for_every_ending(
    end: EngineEnd, status: RunStatus, error: str | None, final: bool
) -> None:
    ending = decide(end)
    assert (ending.status, ending.final) == (status, final)
    if error is None:
        assert ending.error is None
    else:
        assert error in (ending.error or ""), ending.error


def test_the_engine_stderr_explains_a_failure_without_a_reason() -> None:
    ending = decide(EngineEnd(None, exit_code=3, stderr_tail="Traceback ... | ValueError: x"))
    assert ending.error == "the engine exited with code 3: Traceback ... | ValueError: x"
