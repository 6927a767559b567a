"""Run directories and their SQLite index (docs/results.md).

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.runs.rundir import exit_fields, metrics_from_state, read_run_state
from mdtui.runs.status import FINISHED, LIVE, RunStatus, is_status
from mdtui.system.fs import atomic_write_json, file_lock, git_ignored_dir, read_json, sanitize_name
from mdtui.system.processes import (
    git_info,
    package_versions,
    user_name,
)
from mdtui.system.slurm import FINISHED_STATES as SLURM_FINISHED_STATES

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment

SCHEMA_VERSION = 2  # 2: job_id, job_state (Slurm runs)
DB_NAME = "mdtui.db"
BUSY_TIMEOUT_MS = 15_000


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


FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))
_ALL_COLUMNS = ", ".join(f'"{name}"' for name in FIELDS)  # "group" is an SQL keyword: quoted
_DEVICES, _SWEEP, _RUN_DIR, _LEAKY, _NOTE = (
    FIELDS.index(n) for n in ("devices", "sweep", "run_dir", "leaky", "note")
)
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
        # A runs directory mdtui creates is ignored by git (checkpoints are large, the index rebuilds).
        git_ignored_dir(self.runs_dir, only_if_new=True)
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

    def _records(
        self, conn: sqlite3.Connection, where: str = "", args: Sequence[Any] = ()
    ) -> list[RunRecord]:
        """``RunRecord``s of the rows ``where`` selects (plain tuples: listing 10,000 runs is fast)."""
        cursor = conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(f"SELECT {_ALL_COLUMNS} FROM runs {where}", tuple(args)).fetchall()
        return [self._row_to_record(row) for row in rows]

    def _row_to_record(self, row: tuple[Any, ...]) -> RunRecord:
        # positional, in FIELDS order: the cheapest way to build 10,000 records
        values = list(row)
        devices, sweep, rel = values[_DEVICES], values[_SWEEP], values[_RUN_DIR]
        values[_DEVICES] = json.loads(devices) if devices and devices != "[]" else []
        values[_SWEEP] = json.loads(sweep) if sweep and sweep != "{}" else {}
        values[_LEAKY] = bool(values[_LEAKY])
        values[_RUN_DIR] = self.runs_dir / rel if rel else self.runs_dir
        if values[_NOTE] is None:
            values[_NOTE] = ""
        return RunRecord(*values)

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
        status: str = RunStatus.CREATED.value,
        run_id: str | None = None,
        command: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Create ``runs/<experiment>/<run id>/`` with config.json and run.json and index it.

        ``config`` is the engine config dict; its ``run_id``, ``experiment`` and ``seed`` are set here,
        so callers may build it before the id exists. ``run_id`` may be chosen beforehand with
        ``new_run_id()`` (for configs that embed it elsewhere).
        """
        run_dir = self._make_run_dir(exp.name, run_id)
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
            leaky=_config_is_leaky(config),
            total_epochs=config.get("epochs") if isinstance(config.get("epochs"), int) else None,
        )
        meta = {**self._provenance(exp, run_dir, command), **(extra or {})}
        atomic_write_json(run_dir / "run.json", {**meta, **rec.to_json(), "run_dir": str(run_dir)})
        conn = self.connect()
        try:
            self._upsert(conn, rec)
        finally:
            conn.close()
        return rec

    def _make_run_dir(self, experiment: str, run_id: str | None) -> Path:
        """A new, empty ``runs/<experiment>/<run id>/`` (a fresh id on a clash, unless one was given)."""
        exp_dir = self.runs_dir / sanitize_name(experiment)
        exp_dir.mkdir(parents=True, exist_ok=True)
        while True:
            run_dir = exp_dir / (run_id or new_run_id())
            try:
                run_dir.mkdir()  # atomic: of two creators of one id, one wins
                break
            except FileExistsError:
                if run_id:
                    raise ValueError(f"run directory {run_dir} already exists") from None
        (run_dir / "checkpoints").mkdir()
        (run_dir / "artifacts").mkdir()
        return run_dir

    def _provenance(self, exp: Experiment, run_dir: Path, command: list[str] | None) -> dict[str, Any]:
        """What run.json records beyond the index fields: where, by whom and with what it ran."""
        return {
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
            # what settling this run will run (mdtui.execution.notify), fixed when it is created
            "notify": {"command": list(exp.notify), "on": exp.notify_on} if exp.notify else None,
            # how often the scheduler may resume it after it is lost or failed (mdtui.scheduling.retry)
            "retry_policy": dict(exp.retries) if any(exp.retries.values()) else None,
        }

    # ----------------------------------------------------------------- reading

    def get(self, run_id: str) -> RunRecord | None:
        conn = self.connect()
        try:
            found = self._records(conn, "WHERE run_id=?", (run_id,))
        finally:
            conn.close()
        return found[0] if found else None

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int | None = None,
        run_ids: Iterable[str] | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first (``statuses``: only those; empty or None: every status; ``run_ids``:
        only those)."""
        where, args = [], []
        if experiment is not None:
            where.append("experiment=?")
            args.append(experiment)
        if run_ids is not None:
            ids = list(run_ids)
            where.append(f"run_id IN ({', '.join('?' for _ in ids)})" if ids else "0")
            args.extend(ids)
        wanted = [str(s) for s in statuses or ()]
        if wanted:
            where.append(f"status IN ({', '.join('?' for _ in wanted)})")
            args.extend(wanted)
        sql = ("WHERE " + " AND ".join(where) if where else "") + " ORDER BY created_t DESC, run_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        conn = self.connect()
        try:
            return self._records(conn, sql, args)
        finally:
            conn.close()

    def latest_completed(self, experiment: str) -> RunRecord | None:
        runs = self.list_runs(experiment=experiment, statuses=[RunStatus.COMPLETED], limit=1)
        return runs[0] if runs else None

    def latest_runs(self) -> dict[str, RunRecord]:
        """The newest run of every experiment in the index, by experiment name (one query: a lab's
        10,000 runs are not loaded to keep 500)."""
        where = (
            "WHERE rowid IN (SELECT rowid FROM (SELECT rowid, ROW_NUMBER() OVER (PARTITION BY experiment"
            " ORDER BY created_t DESC, run_id DESC) AS nth FROM runs) WHERE nth = 1)"
        )
        conn = self.connect()
        try:
            return {rec.experiment: rec for rec in self._records(conn, where)}
        finally:
            conn.close()

    def index_rows(
        self,
        columns: Sequence[str],
        *,
        statuses: Iterable[str] | None = None,
        run_ids: Sequence[str] | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> list[tuple[Any, ...]]:
        """The raw index values of ``columns`` (``RunRecord`` field names) per run, newest first.

        For readers of many runs (the report, the queue) that would spend more on building
        ``RunRecord``s than on their work: values come as stored -- ``devices``/``sweep`` as JSON
        text, ``leaky`` as 0/1, ``run_dir`` relative to the runs directory, ``note`` possibly None.
        ``conn``: read inside the caller's transaction, in one snapshot with its own tables."""
        unknown = [c for c in columns if c not in FIELDS]
        if unknown or not columns:
            raise ValueError(f"unknown run fields: {', '.join(unknown) or '(none asked)'}")
        where, args = [], []
        if statuses is not None:
            wanted = [str(s) for s in statuses]
            where.append(f"status IN ({', '.join('?' for _ in wanted)})")
            args += wanted
        if run_ids is not None:
            where.append("run_id IN (SELECT value FROM json_each(?))")  # any number of ids, one parameter
            args.append(json.dumps(list(run_ids)))
        sql = f"SELECT {', '.join(_q(c) for c in columns)} FROM runs"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created_t DESC, run_id DESC"
        own = conn is None
        db = self.connect() if conn is None else conn
        try:
            cursor = db.cursor()
            cursor.row_factory = None  # plain tuples: the fastest rows sqlite3 makes
            return cursor.execute(sql, args).fetchall()
        finally:
            if own:
                db.close()

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
        if not self._check_fields(fields):
            return
        rec = self.get(run_id)
        if rec is None:
            raise LookupError(f"no run {run_id}")
        sets, values = self._assignments(fields)
        conn = self.connect()
        try:
            conn.execute(f"UPDATE runs SET {sets} WHERE run_id=?", (*values, run_id))
        finally:
            conn.close()
        if run_json:
            self.update_run_json(rec.run_dir, _json_fields(fields))

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

    def transition_in(
        self, conn: sqlite3.Connection, run_id: str, from_statuses: Iterable[str], **fields: Any
    ) -> bool:
        """``transition`` inside the caller's transaction on ``conn`` (from ``connect()``), so it
        commits or rolls back with the caller's own tables; run.json is left to the caller, after the
        commit (``mirror_run_json``)."""
        if not self._check_fields(fields):
            return False
        sets, values = self._assignments(fields)
        allowed = list(from_statuses)
        marks = ", ".join("?" for _ in allowed)
        cursor = conn.execute(
            f"UPDATE runs SET {sets} WHERE run_id=? AND status IN ({marks})", (*values, run_id, *allowed)
        )
        return cursor.rowcount == 1

    def mirror_run_json(self, run_id: str, fields: dict[str, Any]) -> None:
        """Copy index ``fields`` of a run into its run.json (a run the index no longer has: nothing)."""
        rec = self.get(run_id)
        if rec is not None:
            self.update_run_json(rec.run_dir, _json_fields(fields))

    @staticmethod
    def _check_fields(fields: dict[str, Any]) -> bool:
        """Refuse unknown fields and statuses (a programming error); False when there is nothing to set."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown run fields: {', '.join(sorted(unknown))}")
        if "status" in fields and not is_status(fields["status"]):
            raise ValueError(f"unknown run status {fields['status']!r}")
        return bool(fields)

    def _assignments(self, fields: dict[str, Any]) -> tuple[str, list[Any]]:
        """``"a"=?, "b"=?`` and the values, converted as the index stores them."""
        sets = ", ".join(f"{_q(name)}=?" for name in fields)
        values = [
            self._relative(value) if name == "run_dir" else self._to_sql(name, value)
            for name, value in fields.items()
        ]
        return sets, values

    @staticmethod
    def update_run_json(run_dir: Path, fields: dict[str, Any]) -> None:
        """Merge ``fields`` into ``run_dir/run.json`` atomically (read-modify-write under a lock).

        A run folder that is gone (deleted by hand) is left gone, not re-created around run.json."""
        if not Path(run_dir).is_dir():
            return
        with file_lock(run_dir / ".run.lock"):
            data = read_json(run_dir / "run.json") or {}
            data.update(fields)
            atomic_write_json(run_dir / "run.json", data)

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        """Take runs out of the index (``mdtui rm``: their folders are the caller's to delete);
        returns how many rows went. Only runs that are not live or waiting: those have processes or
        a queue entry that would find their row gone."""
        wanted = list(run_ids)
        if not wanted:
            return 0
        unfinished = [str(s) for s in RunStatus if s not in FINISHED]
        conn = self.connect()
        try:
            cursor = conn.execute(
                f"DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?)) "
                f"AND status NOT IN ({', '.join('?' for _ in unfinished)})",
                (json.dumps(wanted), *unfinished),
            )
            return cursor.rowcount
        finally:
            conn.close()

    def reindex(self) -> int:
        """Rebuild the index from every ``runs/*/*/run.json``; returns the number of runs indexed."""
        records: list[RunRecord] = []
        for run_json in sorted(self.runs_dir.glob("*/*/run.json")):
            rec = self._record_from_dir(run_json.parent)
            if rec is not None:
                records.append(rec)
        self.put_records(records, replace_all=True)
        return len(records)

    def put_records(self, records: Iterable[RunRecord], *, replace_all: bool = False) -> None:
        """Index ``records`` (insert or replace) in one transaction; ``replace_all`` empties the index
        first. The run directories are not touched: for a rebuild, or a benchmark's synthetic index."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if replace_all:
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


def _json_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Index fields as run.json holds them (paths as text)."""
    return {k: (str(v) if k == "run_dir" else v) for k, v in fields.items()}


def _config_is_leaky(config: dict[str, Any]) -> bool:
    from engine.schema.config import is_leaky
    from engine.schema.validate import ConfigError, from_dict

    try:
        return is_leaky(from_dict(config))
    except (ConfigError, TypeError, ValueError):
        return False
