"""The one spelling of a run's status and the groups every part of mdtui reasons with."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """Where a run is in its life. A ``str`` subclass, so values compare equal to their strings.

    created -> queued -> starting -> running -> completed | failed | stopped | lost
    A queued run may become ``blocked`` (its upstream failed) or ``cancelled``.
    """

    CREATED = "created"  # a run directory exists; nothing has been asked of it yet
    QUEUED = "queued"  # waiting in the queue for devices or an upstream run
    BLOCKED = "blocked"  # queued, but its upstream failed: it waits for a new upstream run
    STARTING = "starting"  # devices reserved, supervisor being started
    RUNNING = "running"  # the supervisor has recorded itself
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"  # ended because mdtui (the user, a time limit) asked it to
    LOST = "lost"  # the supervisor vanished without an exit record
    CANCELLED = "cancelled"  # taken out of the queue before it started

    def __str__(self) -> str:  # f"{status}" is the plain value, as in run.json and the index
        return self.value


# Every status is in exactly one of CREATED, WAITING, LIVE and FINISHED (tests/runs/test_status.py).
LIVE = frozenset({RunStatus.STARTING, RunStatus.RUNNING})  # a supervisor is (or should be) alive
WAITING = frozenset({RunStatus.QUEUED, RunStatus.BLOCKED})  # in the queue: starts by itself
FINISHED = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.LOST, RunStatus.CANCELLED}
)
# Finished but not completed, and resumable from last.pt: "Incomplete runs" in RESULTS.md.
# With COMPLETED, these are the endings an engine reports (engine.schema.events.FINAL_STATUSES,
# which stays stdlib-only and cannot import this module).
INCOMPLETE = frozenset({RunStatus.FAILED, RunStatus.STOPPED, RunStatus.LOST})


def is_status(value: object) -> bool:
    return isinstance(value, str) and value in _VALUES


_VALUES = frozenset(s.value for s in RunStatus)
