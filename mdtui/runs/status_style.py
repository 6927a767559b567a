"""How a run's status looks, in the CLI's tables and in the TUI alike: one Rich style per status.

Headless (style strings only, no Rich or Textual import), so that `mdtui status`, `mdtui list`,
`mdtui run`'s report line and the TUI's tables colour the same status the same way.
"""

from __future__ import annotations

from mdtui.runs.status import RunStatus

STOPPING = "stopping"  # not a status: a live run whose stop was asked (the TUI shows its countdown)

STATUS_STYLE: dict[str, str] = {
    RunStatus.CREATED.value: "yellow",
    RunStatus.QUEUED.value: "yellow",
    RunStatus.BLOCKED.value: "bold black on yellow",
    RunStatus.STARTING.value: "green",
    RunStatus.RUNNING.value: "bold green",
    STOPPING: "bold yellow",
    RunStatus.COMPLETED.value: "cyan",
    RunStatus.FAILED.value: "bold white on red",
    RunStatus.LOST.value: "bold white on magenta",
    RunStatus.STOPPED.value: "dim",
    RunStatus.CANCELLED.value: "dim",
}


def status_style(status: str) -> str:
    """The style of ``status`` ("" for anything else); a status with a suffix ("running (2/3)")
    takes its first word's."""
    return STATUS_STYLE.get(str(status).split(" ", 1)[0], "")
