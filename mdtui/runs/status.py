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

    @property
    def live(self) -> bool:
        """A supervisor is (or should be) alive and devices are reserved."""
        return self in LIVE

    @property
    def waiting(self) -> bool:
        """In the queue: it will start by itself when what it waits for is there."""
        return self in WAITING

    @property
    def finished(self) -> bool:
        return self in FINISHED


LIVE = frozenset({RunStatus.STARTING, RunStatus.RUNNING})
WAITING = frozenset({RunStatus.QUEUED, RunStatus.BLOCKED})
FINISHED = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.LOST, RunStatus.CANCELLED}
)
# Finished but not completed, and resumable from last.pt: "Incomplete runs" in RESULTS.md.
INCOMPLETE = frozenset({RunStatus.FAILED, RunStatus.STOPPED, RunStatus.LOST})
ALL = frozenset(RunStatus)


def is_status(value: object) -> bool:
    return isinstance(value, str) and value in _VALUES


_VALUES = frozenset(s.value for s in RunStatus)
