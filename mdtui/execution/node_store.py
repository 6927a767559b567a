"""Only the manager writes the index: what a cluster node writes, and how the manager takes it in.

``runs/mdtui.db`` is SQLite in WAL mode, whose writers must share one host; on a cluster the runs
directory is on NFS or Lustre, where writes from the nodes corrupt the index or lose updates. So
the supervisor inside a Slurm job writes through a ``RunDirStore``: the calls of ``RunStore`` it
makes (``get``, ``update``, ``update_run_json``), each a change to its own ``run.json``, never a
connection to the index. The ending it settles is run.json, its plots and exit.json; the RESULTS.md
line is left to the manager (exit.json says ``results_pending``).

Whoever polls (`mdtui status`, the TUI, the scheduler: ``reconcile``) brings the index to what the
run directory says with ``adopt``: the live attempt's fields from run.json once Slurm runs the job,
and the ending from exit.json (``ending.converge``, which writes the RESULTS.md line too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mdtui.execution.ending import converge
from mdtui.runs.record import RunRecord
from mdtui.runs.rundir import EXIT_FILE, exit_fields
from mdtui.runs.status import LIVE, WAITING, RunStatus
from mdtui.runs.store import RunStore
from mdtui.runs.writer import rewrite_run_json, update_run_json
from mdtui.system.fs import read_json

# what the node's supervisor records of a live attempt, taken into the index by the manager
ADOPTED = (
    "status",
    "devices",
    "job_id",
    "supervisor_pid",
    "supervisor_start",
    "boot_id",
    "pid",
    "pgid",
    "proc_start",
    "started_t",
    "total_epochs",
    "epochs_done",
    "best_acc1",
    "best_epoch",
    "last_acc1",
)


NODE_KEY = "node"  # in run.json: the index fields this attempt's node wrote


def attempt_id(env: dict[str, str] | None = None) -> str:
    """This job attempt: its job id and Slurm's restart count ("1093:0", "1093:1" after a requeue)."""
    env = os.environ if env is None else env
    return f"{env.get('SLURM_JOB_ID', '')}:{env.get('SLURM_RESTART_COUNT') or 0}"


class RunDirStore:
    """A ``RunStore`` for one run directory that writes run.json only (``indexes`` is False)."""

    indexes = False

    def __init__(self, run_dir: Path, experiments_file: Path | str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.runs_dir = self.run_dir.parent.parent
        self.experiments_file = Path(experiments_file) if experiments_file else None

    def get(self, run_id: str) -> RunRecord | None:
        data = read_json(self.run_dir / "run.json")
        if not isinstance(data, dict) or data.get("run_id") != run_id:
            return None
        return RunRecord.from_run_json(data, self.run_dir)

    def update(self, run_id: str, *, run_json: bool = True, **fields: Any) -> None:
        """run.json only; ``run_json=False`` (an index-only write) is nothing to do here.

        The fields are also kept under run.json's ``node`` key, for this attempt only: the manager
        mirrors its own index writes into run.json (a ``starting`` it saw in Slurm may land after
        this node's ``running``), and reads what the node said from there (``adopt``)."""
        if not run_json or not fields:
            return
        attempt = attempt_id()

        def record(data: dict[str, Any]) -> None:
            node = data.get(NODE_KEY)
            node = node if isinstance(node, dict) and node.get("attempt") == attempt else {"attempt": attempt}
            data.update(fields)
            data[NODE_KEY] = {**node, **fields}

        rewrite_run_json(self.run_dir, record)

    @staticmethod
    def update_run_json(run_dir: Path, fields: dict[str, Any]) -> None:
        update_run_json(run_dir, fields)

    @property
    def attempt(self) -> str:
        return attempt_id()


def reopen(store: RunStore, rec: RunRecord) -> RunRecord | None:
    """An ended Slurm run whose job began a new attempt between two polls (Slurm ran a requeued job
    at once): live again, with this attempt's fields. None when nothing new began.

    The new attempt's node set the ended attempt's exit.json aside (``exit.json.prev``, naming its
    attempt) and writes its own attempt id into run.json's ``node`` fields."""
    run_dir = Path(rec.run_dir)
    if rec.status not in (RunStatus.FAILED, RunStatus.LOST) or (run_dir / EXIT_FILE).exists():
        return None
    info = read_json(run_dir / "run.json")
    node = info.get(NODE_KEY) if isinstance(info, dict) else None
    ended = read_json(run_dir / f"{EXIT_FILE}.prev")
    if not isinstance(node, dict) or not isinstance(ended, dict) or not ended.get("attempt"):
        return None
    attempt = str(node.get("attempt") or "")
    if attempt == ended["attempt"] or attempt.split(":", 1)[0] != str(rec.job_id):
        return None
    # the index only (run_json=False): run.json is the node's, and says this attempt already
    store.begin_attempt(rec.run_id, run_json=False, status=RunStatus.STARTING.value)
    return adopt(store, store.get(rec.run_id)) or store.get(rec.run_id)


def adopt(store: RunStore, rec: RunRecord) -> RunRecord | None:
    """Bring a cluster run's index row to what its node wrote; the record if it changed, else None.

    Its ending (exit.json) is taken while the index still has it waiting or live. A live attempt's
    fields are taken only once Slurm was seen running the job (or the index has it live): a run.json
    left ``running`` by an attempt that died before a requeue is not this attempt's.
    """
    run_dir = Path(rec.run_dir)
    if rec.status not in (*LIVE, *WAITING):
        return None
    if exit_fields(run_dir) is not None:
        return converge(store, rec)
    slurm_runs_it = rec.status in LIVE or (rec.job_state or "").startswith("RUNNING")
    info = read_json(run_dir / "run.json")
    node = info.get(NODE_KEY) if isinstance(info, dict) else None
    if not slurm_runs_it or not isinstance(node, dict) or node.get("status") != RunStatus.RUNNING:
        return None
    if str(node.get("attempt", "")).split(":", 1)[0] != str(rec.job_id):
        return None  # a job of an earlier submission (the run was resumed as a new job)
    fields = {k: node[k] for k in ADOPTED if k in node and node[k] != getattr(rec, k)}
    if "devices" in fields and not isinstance(fields["devices"], list):
        fields.pop("devices")
    if not fields:
        return None
    store.update(rec.run_id, run_json=False, **fields)
    return store.get(rec.run_id)
