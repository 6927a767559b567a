"""Where runs execute: one small interface, the local supervisor as its first backend (DESIGN.md section 7).

The scheduler, the CLI and the TUI only talk to a `Launcher`; a cluster backend (Slurm: sbatch,
squeue, scancel) fits behind the same four calls without touching them.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from mdtui.execution.reconcile import reconcile

if TYPE_CHECKING:
    from mdtui.runs.store import RunStore

LIVE_STATUSES = ("starting", "running")
WAITING_STATUSES = ("queued", "blocked")


class Launcher(Protocol):
    def submit(self, run_id: str, devices: list[str]) -> None:
        """Start the run on ``devices``; returns once it is handed over (not once it finishes)."""

    def poll(self, run_id: str) -> str:
        """The run's status (a store status value); a dead run without an exit record reads ``lost``."""

    def cancel(self, run_id: str) -> bool:
        """Ask the run to stop; True if a signal was delivered."""

    def where(self, run_id: str) -> tuple[str, list[str]]:
        """(host, devices) the run executes on."""


class LocalLauncher:
    """Runs on this machine under `mdtui.execution.supervise`, one detached supervisor per run."""

    def __init__(self, store: RunStore, *, grace: float = 30.0, runs_per_device: int = 1) -> None:
        self.store = store
        self.grace = grace
        self.runs_per_device = runs_per_device  # CPU runs sharing the machine split its cores

    def submit(self, run_id: str, devices: list[str]) -> None:
        from mdtui.execution import supervise

        env = supervise.cpu_threads_env(list(devices), self.runs_per_device)
        supervise.launch(self.store, run_id, devices=list(devices), env=env)

    def poll(self, run_id: str) -> str:
        record = self.store.get(run_id)
        if record is None:
            return "lost"
        if record.status in LIVE_STATUSES:
            # refresh() checks pid + start-time identity and finalises dead runs
            reconcile(self.store)
            record = self.store.get(run_id) or record
        return record.status

    def cancel(self, run_id: str) -> bool:
        from mdtui.execution import supervise

        return bool(supervise.stop(self.store, run_id, grace=self.grace))

    def where(self, run_id: str) -> tuple[str, list[str]]:
        record = self.store.get(run_id)
        return socket.gethostname(), list(record.devices) if record else []
