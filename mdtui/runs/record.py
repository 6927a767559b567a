"""What the index knows of one run: ``RunRecord``, its field names, and how a run id is made.

Its own module so that the index (``mdtui.runs.index``), the run-directory writer
(``mdtui.runs.writer``) and the rebuild (``mdtui.runs.rebuild``) share it without importing each other.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdtui.runs.status import FINISHED, LIVE, RunStatus
from mdtui.system.slurm import FINISHED_STATES as SLURM_FINISHED_STATES


@dataclass
class RunRecord:
    run_id: str
    experiment: str
    group: str = ""
    run_dir: Path = field(default_factory=Path)
    status: str = RunStatus.CREATED.value
    created_t: float = 0.0
    started_t: float | None = None
    ended_t: float | None = None
    devices: list[str] = field(default_factory=list)
    pid: int | None = None  # the engine process (leader of its own process group)
    pgid: int | None = None
    proc_start: float | None = None  # psutil create_time of ``pid``: a reused pid never matches
    seed: int = 0
    sweep: dict[str, Any] = field(default_factory=dict)
    leaky: bool = False
    note: str = ""
    total_epochs: int | None = None
    epochs_done: int = 0
    best_acc1: float | None = None
    best_epoch: int | None = None
    last_acc1: float | None = None
    acc5: float | None = None
    err1: float | None = None
    many: float | None = None
    medium: float | None = None
    few: float | None = None
    exit_code: int | None = None
    error: str | None = None
    # beyond the internals.md contract: who watches the engine, and on which boot
    supervisor_pid: int | None = None
    supervisor_start: float | None = None
    boot_id: str | None = None
    # a run handed to Slurm (mdtui.execution.slurm): its job id, and what Slurm last said of the job
    # ("PENDING (Priority)", "RUNNING on node3, 0:12 of 2:00"); None for a local run
    job_id: str | None = None
    job_state: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def slurm_line(self) -> str | None:
        """ "Slurm job N: <what Slurm said at the last poll>" for a Slurm run, else None. A finished
        run whose last word from Slurm was a live state ("RUNNING on n3": true until the run ended,
        and the index keeps no later poll of it) shows the job alone."""
        if not self.job_id:
            return None
        state = self.job_state or "-"
        if self.status in FINISHED and state.split(" ", 1)[0] not in SLURM_FINISHED_STATES:
            return f"Slurm job {self.job_id}"
        if self.status in (RunStatus.STOPPED, RunStatus.CANCELLED):
            # the batch shell of a stopped run exits 1 (so that afterok holds its dependants): Slurm's
            # "FAILED" would contradict the run's own status
            return f"Slurm job {self.job_id}"
        return f"Slurm job {self.job_id}: {state}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data

    @classmethod
    def from_run_json(cls, data: dict[str, Any], run_dir: Path) -> RunRecord:
        """The record a run.json holds (its index fields; the rest of run.json is provenance)."""
        values = {name: data[name] for name in FIELDS if name in data}
        values["run_dir"] = run_dir
        return cls(**values)


FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))


def new_run_id(now: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (local time, 4 random hex digits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"
