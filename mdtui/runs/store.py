"""Run directories and their SQLite index together: ``RunStore``, what the rest of mdtui asks
(docs/results.md).

A run directory ``runs/<sanitised experiment>/<run id>/`` is the source of truth: ``run.json``
(identity, provenance, status), ``config.json``, ``events.jsonl``, logs, ``exit.json``. The store
keeps the index (``RunIndex``, mdtui.runs.index: every SQL statement) and the run directories
(mdtui.runs.writer) in step: a change goes into the index and is mirrored into run.json. The index
is rebuilt from the directories by ``reindex`` (mdtui.runs.rebuild).

``RunRecord``, ``FIELDS`` and ``new_run_id`` live in mdtui.runs.record and are re-exported here, as
are the index's constants, so callers import one module.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.runs import writer
from mdtui.runs.index import BUSY_TIMEOUT_MS, DB_NAME, SCHEMA_VERSION, RunIndex
from mdtui.runs.record import FIELDS, RunRecord, new_run_id
from mdtui.runs.status import RunStatus
from mdtui.system.fs import atomic_write_json, git_ignored_dir

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment

__all__ = ["BUSY_TIMEOUT_MS", "DB_NAME", "FIELDS", "SCHEMA_VERSION", "RunRecord", "RunStore", "new_run_id"]


class RunStore(RunIndex):
    """Run directories under ``runs_dir`` plus the SQLite index ``runs_dir/mdtui.db``."""

    def __init__(
        self,
        runs_dir: Path | str,
        *,
        project_dir: Path | str | None = None,
        experiments_file: Path | str | None = None,
    ) -> None:
        """``experiments_file`` (recorded in run.json) and ``project_dir`` (git facts) are optional:
        ``project_dir`` defaults to the experiments file's directory, else the runs directory's parent."""
        runs_dir = Path(runs_dir).expanduser().resolve()
        self.experiments_file = Path(experiments_file).resolve() if experiments_file else None
        if project_dir:
            self.project_dir = Path(project_dir).resolve()
        elif self.experiments_file:
            self.project_dir = self.experiments_file.parent
        else:
            self.project_dir = runs_dir.parent
        # A runs directory mdtui creates is ignored by git (checkpoints are large, the index rebuilds).
        git_ignored_dir(runs_dir, only_if_new=True)
        super().__init__(runs_dir)

    # ----------------------------------------------------------------- creating runs

    def new_run_id(self) -> str:
        return new_run_id()

    def create_run(self, exp: Experiment, config: dict[str, Any], **details: Any) -> RunRecord:
        """``write_run`` (same arguments), then index the run."""
        rec = self.write_run(exp, config, **details)
        self.insert(rec)
        return rec

    def write_run(
        self,
        exp: Experiment,
        config: dict[str, Any],
        *,
        seed: int,
        devices: list[str],
        status: str = RunStatus.CREATED.value,
        run_id: str | None = None,
        command: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Create ``runs/<experiment>/<run id>/`` with config.json and run.json, not yet indexed: the
        caller indexes it (``insert``), alone (``create_run``) or in one transaction with rows of
        its own (a queued run and its queue entry).

        ``config`` is the engine config dict; its ``run_id``, ``experiment`` and ``seed`` are set here,
        so callers may build it before the id exists. ``run_id`` may be chosen beforehand with
        ``new_run_id()`` (for configs that embed it elsewhere).
        """
        run_dir = writer.make_run_dir(self.runs_dir, exp.name, run_id)
        config = {**config, "run_id": run_dir.name, "experiment": exp.name, "seed": seed}
        atomic_write_json(run_dir / "config.json", config)
        rec = RunRecord(
            run_id=run_dir.name,
            experiment=exp.name,
            group=exp.group,
            run_dir=run_dir,
            status=status,
            created_t=time.time(),
            devices=list(devices),
            seed=seed,
            sweep=dict(exp.sweep_point),
            leaky=writer.config_is_leaky(config),
            total_epochs=config.get("epochs") if isinstance(config.get("epochs"), int) else None,
        )
        facts = writer.provenance(
            exp, run_dir, command, project_dir=self.project_dir, experiments_file=self.experiments_file
        )
        meta = {**facts, **(extra or {})}
        atomic_write_json(run_dir / writer.RUN_JSON, {**meta, **rec.to_json(), "run_dir": str(run_dir)})
        return rec

    # ----------------------------------------------------------------- changing runs

    def begin_attempt(self, run_id: str, **fields: Any) -> None:
        """A new attempt of a run (a start, a resume, a Slurm submission): the previous attempt's
        end and processes are cleared with ``fields`` set, so nothing of it is read as the new one's."""
        self.update(
            run_id,
            **{
                "ended_t": None,
                "exit_code": None,
                "error": None,
                "pid": None,
                "pgid": None,
                "proc_start": None,
                "supervisor_pid": None,
                "supervisor_start": None,
                **fields,
            },
        )

    def update(self, run_id: str, *, run_json: bool = True, **fields: Any) -> None:
        """Set index fields and mirror them into run.json (under the run's lock).

        ``run_json=False`` touches the index only: a run's ending writes run.json first and exit.json
        last, and nothing may write into its folder after that (mdtui.execution.ending)."""
        rec = self.update_index(run_id, fields)
        if rec is not None and run_json:
            self.update_run_json(rec.run_dir, writer.json_fields(fields))

    def transition(self, run_id: str, from_statuses: Iterable[str], **fields: Any) -> bool:
        """Set ``fields`` only while the run's status is one of ``from_statuses``; True when it was.

        One conditional UPDATE: of two racing writers (a cancel and a launch, two schedulers) exactly
        one wins. run.json follows the index when the row changed."""
        conn = self.connect()
        try:
            changed = self.transition_in(conn, run_id, from_statuses, **fields)
        finally:
            conn.close()
        if changed:
            self.mirror_run_json(run_id, fields)
        return changed

    def mirror_run_json(self, run_id: str, fields: dict[str, Any]) -> None:
        """Copy index ``fields`` of a run into its run.json (a run the index no longer has: nothing)."""
        rec = self.get(run_id)
        if rec is not None:
            self.update_run_json(rec.run_dir, writer.json_fields(fields))

    @staticmethod
    def update_run_json(run_dir: Path, fields: dict[str, Any]) -> None:
        """Merge ``fields`` into ``run_dir/run.json`` atomically (read-modify-write under a lock).

        A run folder that is gone (deleted by hand) is left gone, not re-created around run.json."""
        writer.update_run_json(run_dir, fields)
