"""The SQLite index of the runs, ``runs/mdtui.db``: every SQL statement on the ``runs`` table.

The run directories are the truth (mdtui.runs.writer writes them); the index is a cache for fast
listing, rebuilt from them by ``reindex`` (mdtui.runs.rebuild). It is SQLite in WAL mode and every
connection is short-lived with a busy timeout, so many supervisors, a scheduler and a TUI can share
it. ``tests/runs/test_store.py`` fails if another module of mdtui queries the ``runs`` table.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mdtui.runs.rebuild import records_from_dirs
from mdtui.runs.record import FIELDS, RunRecord
from mdtui.runs.status import FINISHED, RunStatus, is_status

SCHEMA_VERSION = 2  # 2: job_id, job_state (Slurm runs)
DB_NAME = "mdtui.db"
BUSY_TIMEOUT_MS = 15_000


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


class RunIndex:
    """The index ``runs_dir/mdtui.db`` of the runs under ``runs_dir`` (which must exist)."""

    def __init__(self, runs_dir: Path | str) -> None:
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.db_path = self.runs_dir / DB_NAME
        self._init_schema()

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

    def insert(self, rec: RunRecord, conn: sqlite3.Connection | None = None) -> None:
        """Index one new run (or replace its row); on ``conn`` when given, inside the caller's
        transaction (a queued run and its queue entry appear together, or neither does)."""
        if conn is not None:
            self._upsert(conn, rec)
            return
        conn = self.connect()
        try:
            self._upsert(conn, rec)
        finally:
            conn.close()

    def update_index(self, run_id: str, fields: dict[str, Any]) -> RunRecord | None:
        """Set index ``fields`` of a run; its record as it was before, or None when ``fields`` is
        empty. ``LookupError`` when the index has no such run."""
        if not self._check_fields(fields):
            return None
        rec = self.get(run_id)
        if rec is None:
            raise LookupError(f"no run {run_id}")
        sets, values = self._assignments(fields)
        conn = self.connect()
        try:
            conn.execute(f"UPDATE runs SET {sets} WHERE run_id=?", (*values, run_id))
        finally:
            conn.close()
        return rec

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
        records = records_from_dirs(self.runs_dir)
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
