"""Run directories and their SQLite index (DESIGN.md section 3).

A run directory ``runs/<sanitised experiment>/<run id>/`` is the source of truth: ``run.json``
(identity, provenance, status), ``config.json``, ``events.jsonl``, logs, ``exit.json``. The index
``runs/mdtui.db`` (SQLite, WAL) is a cache for fast listing, rebuilt from the directories by
``reindex``. Every connection is short-lived with a busy timeout, so many supervisors, a scheduler
and a TUI can share it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import secrets
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.runs.rundir import exit_fields, metrics_from_state, read_run_state
from mdtui.runs.status import FINISHED, LIVE, RunStatus, is_status
from mdtui.system.fs import atomic_write_json, file_lock, read_json, sanitize_name
from mdtui.system.processes import (
    git_info,
    package_versions,
    user_name,
)

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment

SCHEMA_VERSION = 1
DB_NAME = "mdtui.db"
BUSY_TIMEOUT_MS = 15_000


@dataclass
class RunRecord:
    run_id: str
    experiment: str
    group: str = ""
    run_dir: Path = field(default_factory=Path)
    status: str = "created"
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

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))
_JSON_FIELDS = {"devices", "sweep"}
_BOOL_FIELDS = {"leaky"}

_SQL_TYPES = {
    "run_id": "TEXT PRIMARY KEY",
    "experiment": "TEXT NOT NULL",
    "status": "TEXT NOT NULL",
    "created_t": "REAL NOT NULL",
}


def _q(name: str) -> str:
    # "group" is an SQL keyword: quote every column name
    return f'"{name}"'


def _column(name: str) -> str:
    if name in _SQL_TYPES:
        return f"{_q(name)} {_SQL_TYPES[name]}"
    hint = dataclasses.fields(RunRecord)[FIELDS.index(name)].type
    if "float" in str(hint):
        return f"{_q(name)} REAL"
    if "int" in str(hint) or "bool" in str(hint):
        return f"{_q(name)} INTEGER"
    return f"{_q(name)} TEXT"


def new_run_id(now: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (local time, 4 random hex digits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


# --------------------------------------------------------------------------- the store


class RunStore:
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
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.experiments_file = Path(experiments_file).resolve() if experiments_file else None
        if project_dir:
            self.project_dir = Path(project_dir).resolve()
        elif self.experiments_file:
            self.project_dir = self.experiments_file.parent
        else:
            self.project_dir = self.runs_dir.parent
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.runs_dir / DB_NAME
        self._init_schema()

    # ----------------------------------------------------------------- database

    def connect(self) -> sqlite3.Connection:
        """A new connection (WAL, busy timeout, rows as ``sqlite3.Row``); close it when done."""
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return conn

    def _init_schema(self) -> None:
        conn = self.connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key='store_schema'").fetchone()
            version = int(row["value"]) if row else None
            if version == SCHEMA_VERSION:
                return
            # A different (older) index layout: the directories are the truth, so rebuild it.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DROP TABLE IF EXISTS runs")
            cols = ", ".join(_column(name) for name in FIELDS)
            conn.execute(f"CREATE TABLE runs ({cols})")
            conn.execute("CREATE INDEX IF NOT EXISTS runs_experiment ON runs (experiment, created_t)")
            conn.execute("CREATE INDEX IF NOT EXISTS runs_status ON runs (status)")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('store_schema', ?)", (str(SCHEMA_VERSION),)
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        if version is not None:
            self.reindex()

    def _row_to_record(self, row: sqlite3.Row) -> RunRecord:
        data: dict[str, Any] = {}
        for name in FIELDS:
            value = row[name]
            if name in _JSON_FIELDS:
                value = json.loads(value) if value else ([] if name == "devices" else {})
            elif name in _BOOL_FIELDS:
                value = bool(value)
            elif name == "run_dir":
                value = self.runs_dir / value if value else self.runs_dir
            elif name == "note" and value is None:
                value = ""
            data[name] = value
        return RunRecord(**data)

    @staticmethod
    def _to_sql(name: str, value: Any) -> Any:
        if name in _JSON_FIELDS:
            return json.dumps(value if value is not None else ([] if name == "devices" else {}))
        if name in _BOOL_FIELDS:
            return int(bool(value))
        return value

    def _record_row(self, rec: RunRecord) -> dict[str, Any]:
        row = {name: self._to_sql(name, getattr(rec, name)) for name in FIELDS}
        row["run_dir"] = self._relative(rec.run_dir)
        return row

    def _relative(self, run_dir: Path) -> str:
        try:
            return str(Path(run_dir).resolve().relative_to(self.runs_dir))
        except ValueError:
            return str(run_dir)

    def _upsert(self, conn: sqlite3.Connection, rec: RunRecord) -> None:
        row = self._record_row(rec)
        names = ", ".join(_q(name) for name in row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})", tuple(row.values()))

    # ----------------------------------------------------------------- creating runs

    def new_run_id(self) -> str:
        return new_run_id()

    def create_run(
        self,
        exp: Experiment,
        config: dict[str, Any],
        *,
        seed: int,
        devices: list[str],
        status: str = "created",
        run_id: str | None = None,
        command: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Create ``runs/<experiment>/<run id>/`` with config.json and run.json and index it.

        ``config`` is the engine config dict; its ``run_id``, ``experiment`` and ``seed`` are set here,
        so callers may build it before the id exists. ``run_id`` may be chosen beforehand with
        ``new_run_id()`` (for configs that embed it elsewhere).
        """
        exp_dir = self.runs_dir / sanitize_name(exp.name)
        exp_dir.mkdir(parents=True, exist_ok=True)
        while True:
            rid = run_id or new_run_id()
            run_dir = exp_dir / rid
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                if run_id:
                    raise ValueError(f"run directory {run_dir} already exists") from None
        (run_dir / "checkpoints").mkdir()
        (run_dir / "artifacts").mkdir()
        config = dict(config)
        config["run_id"] = rid
        config["experiment"] = exp.name
        config["seed"] = seed
        atomic_write_json(run_dir / "config.json", config)

        rec = RunRecord(
            run_id=rid,
            experiment=exp.name,
            group=exp.group,
            run_dir=run_dir,
            status=status,
            created_t=time.time(),
            devices=list(devices),
            seed=seed,
            sweep=dict(exp.sweep_point),
            leaky=_config_is_leaky(config),
            total_epochs=config.get("epochs") if isinstance(config.get("epochs"), int) else None,
        )
        meta = {
            "table": exp.table,
            "upstream": exp.upstream,
            "tags": list(exp.tags),
            "command": command or [sys.executable, "-m", "engine", str(run_dir)],
            "host": socket.gethostname(),
            "user": user_name(),
            "python": sys.version.split()[0],
            "python_executable": sys.executable,
            "git": git_info(self.project_dir),
            "packages": package_versions(),
            "experiments_dir": str(self.project_dir),
            "experiments_file": str(self.experiments_file) if self.experiments_file else None,
        }
        meta.update(extra or {})
        atomic_write_json(run_dir / "run.json", {**meta, **rec.to_json(), "run_dir": str(run_dir)})
        conn = self.connect()
        try:
            self._upsert(conn, rec)
        finally:
            conn.close()
        return rec

    # ----------------------------------------------------------------- reading

    def get(self, run_id: str) -> RunRecord | None:
        conn = self.connect()
        try:
            row = conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        finally:
            conn.close()
        return self._row_to_record(row) if row else None

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        statuses: list[str] | tuple[str, ...] | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first."""
        where, args = [], []
        if experiment is not None:
            where.append("experiment=?")
            args.append(experiment)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args.extend(statuses)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_t DESC, run_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        conn = self.connect()
        try:
            rows = conn.execute(sql, args).fetchall()
        finally:
            conn.close()
        return [self._row_to_record(r) for r in rows]

    def latest_completed(self, experiment: str) -> RunRecord | None:
        runs = self.list_runs(experiment=experiment, statuses=["completed"], limit=1)
        return runs[0] if runs else None

    def resolve(self, ref: str) -> RunRecord:
        """A run by id, a unique id prefix or suffix, or an experiment name (its latest run)."""
        ref = ref.strip()
        rec = self.get(ref)
        if rec is not None:
            return rec
        runs = self.list_runs()
        by_exp = [r for r in runs if r.experiment == ref]
        if by_exp:
            return by_exp[0]
        matches = [r for r in runs if ref and (r.run_id.startswith(ref) or r.run_id.endswith(ref))]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(f"{r.run_id} ({r.experiment})" for r in matches[:8])
            raise LookupError(f'"{ref}" matches {len(matches)} runs: {shown}. Give more of the run id.')
        names = sorted({r.run_id for r in runs} | {r.experiment for r in runs})
        close = difflib.get_close_matches(ref, names, n=5, cutoff=0.5)
        if close:
            hint = "closest: " + ", ".join(close)
        elif runs:
            hint = "recent runs: " + ", ".join(f"{r.run_id} ({r.experiment})" for r in runs[:5])
        else:
            hint = f"there are no runs in {self.runs_dir} yet"
        raise LookupError(f'no run or experiment "{ref}" in {self.runs_dir}; {hint}')

    # ----------------------------------------------------------------- writing

    def update(self, run_id: str, **fields: Any) -> None:
        """Set index fields and mirror them into run.json (under the run's lock)."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown run fields: {', '.join(sorted(unknown))}")
        if not fields:
            return
        if "status" in fields and not is_status(fields["status"]):
            raise ValueError(f"unknown run status {fields['status']!r}")
        rec = self.get(run_id)
        if rec is None:
            raise LookupError(f"no run {run_id}")
        conn = self.connect()
        try:
            sets = ", ".join(f"{_q(name)}=?" for name in fields)
            values = [self._to_sql(name, value) for name, value in fields.items()]
            if "run_dir" in fields:
                values[list(fields).index("run_dir")] = self._relative(fields["run_dir"])
            conn.execute(f"UPDATE runs SET {sets} WHERE run_id=?", (*values, run_id))
        finally:
            conn.close()
        self.update_run_json(rec.run_dir, {k: (str(v) if k == "run_dir" else v) for k, v in fields.items()})

    @staticmethod
    def update_run_json(run_dir: Path, fields: dict[str, Any]) -> None:
        """Merge ``fields`` into ``run_dir/run.json`` atomically (read-modify-write under a lock)."""
        with file_lock(run_dir / ".run.lock"):
            data = read_json(run_dir / "run.json") or {}
            data.update(fields)
            atomic_write_json(run_dir / "run.json", data)

    def reindex(self) -> int:
        """Rebuild the index from every ``runs/*/*/run.json``; returns the number of runs indexed."""
        records: list[RunRecord] = []
        for run_json in sorted(self.runs_dir.glob("*/*/run.json")):
            rec = self._record_from_dir(run_json.parent)
            if rec is not None:
                records.append(rec)
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM runs")
            for rec in records:
                self._upsert(conn, rec)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        return len(records)

    def _record_from_dir(self, run_dir: Path) -> RunRecord | None:
        data = read_json(run_dir / "run.json")
        if not isinstance(data, dict) or not data.get("run_id") or not data.get("experiment"):
            return None
        values = {name: data[name] for name in FIELDS if name in data}
        values["run_dir"] = run_dir
        if not is_status(values.get("status")):
            values["status"] = RunStatus.LOST.value
        values.setdefault("created_t", run_dir.stat().st_mtime)
        rec = RunRecord(**values)
        final = exit_fields(run_dir)
        fields = final if final is not None else metrics_from_state(read_run_state(run_dir))
        for name, value in fields.items():
            setattr(rec, name, value)
        return rec


def _config_is_leaky(config: dict[str, Any]) -> bool:
    from engine.schema.config import ConfigError, from_dict, is_leaky

    try:
        return is_leaky(from_dict(config))
    except (ConfigError, TypeError, ValueError):
        return False
