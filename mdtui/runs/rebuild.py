"""Rebuilding the index from the run directories: the record each ``runs/*/*/run.json`` gives.

run.json holds the identity and the last status written; a run that ended has exit.json, a run
that did not has its events, and either gives the metrics (mdtui.runs.rundir).
"""

from __future__ import annotations

from pathlib import Path

from mdtui.runs.record import RunRecord
from mdtui.runs.rundir import exit_fields, metrics_from_state, read_run_state
from mdtui.runs.status import RunStatus, is_status
from mdtui.runs.writer import RUN_JSON
from mdtui.system.fs import read_json


def record_from_dir(run_dir: Path) -> RunRecord | None:
    """The record of one run directory; None when its run.json is missing or names no run."""
    data = read_json(run_dir / RUN_JSON)
    if not isinstance(data, dict) or not data.get("run_id") or not data.get("experiment"):
        return None
    data = dict(data)
    if not is_status(data.get("status")):
        data["status"] = RunStatus.LOST.value
    data.setdefault("created_t", run_dir.stat().st_mtime)
    rec = RunRecord.from_run_json(data, run_dir)
    final = exit_fields(run_dir)
    fields = final if final is not None else metrics_from_state(read_run_state(run_dir))
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def records_from_dirs(runs_dir: Path) -> list[RunRecord]:
    """The records of every run directory under ``runs_dir``, in path order."""
    found = (record_from_dir(run_json.parent) for run_json in sorted(runs_dir.glob("*/*/run.json")))
    return [rec for rec in found if rec is not None]
