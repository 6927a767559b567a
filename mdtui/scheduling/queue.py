"""The run queue: a table in the runs index (runs/mdtui.db) plus the status of each queued run.

A queued run is a real run directory (status ``queued`` or ``blocked``) created at enqueue time, so the
config is a snapshot of experiments.toml as it was then; only what depends on other runs (the
upstream's checkpoint, combined masks) is filled in at launch. The ``queue`` table orders the runs
and remembers what each needs: devices, and the experiments it depends on (``from`` and
``doctor.mask.combine_with``). Every state change is a conditional UPDATE, so a cancel racing a
launch, or two schedulers racing each other, can never both win.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.schema.events import make_event
from mdtui.execution.ending import end_unstarted
from mdtui.registry.plan import engine_config
from mdtui.runs.prepare import cache_dir, dependency_order, require_data
from mdtui.runs.rundir import append_event
from mdtui.runs.status import WAITING, RunStatus

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunRecord, RunStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    run_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    experiment TEXT NOT NULL,
    needs TEXT NOT NULL DEFAULT '[]',  -- JSON list of experiments that must have a completed run
    gpus INTEGER NOT NULL DEFAULT 1,
    devices TEXT,                      -- JSON list chosen with --device, or NULL: any device
    enqueued_t REAL NOT NULL,
    launched_t REAL,                   -- set when handed to the launcher; the row goes when the run ends
    reason TEXT                        -- why it is still waiting (shown by `mdtui queue`)
);
CREATE TABLE IF NOT EXISTS queue_state (key TEXT PRIMARY KEY, value TEXT);
"""

# an upstream in one of these will still produce a result (blocked ones wait for a new upstream)
PENDING = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)


class QueueError(Exception):
    """A queue operation the user asked for cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class QueueEntry:
    run_id: str
    position: int  # 1-based among waiting entries; 0 once launched
    experiment: str
    status: str  # the run's status: queued, blocked, starting, running, ...
    needs: tuple[str, ...]
    gpus: int
    devices: tuple[str, ...] | None  # requested with --device
    enqueued_t: float
    launched_t: float | None
    reason: str | None
    assigned: tuple[str, ...] = ()  # devices the run was given

    @property
    def waiting(self) -> bool:
        return self.launched_t is None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "position": self.position,
            "experiment": self.experiment,
            "status": self.status,
            "needs": list(self.needs),
            "gpus": self.gpus,
            "devices": list(self.devices) if self.devices is not None else None,
            "assigned": list(self.assigned),
            "enqueued_t": self.enqueued_t,
            "launched_t": self.launched_t,
            "reason": self.reason,
        }


_SCHEMA_READY: set[str] = set()  # databases whose queue tables this process has created


@contextmanager
def connection(store: RunStore) -> Iterator[sqlite3.Connection]:
    conn = store.connect()
    try:
        if str(store.db_path) not in _SCHEMA_READY:
            conn.executescript(SCHEMA)
            _SCHEMA_READY.add(str(store.db_path))
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock up front, so read-then-write sequences cannot interleave."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def dependencies(exp: Experiment) -> list[str]:
    """Experiments whose completed run ``exp`` needs: its ``from`` and its ``doctor.mask.combine_with``."""
    needs = [exp.upstream] if exp.upstream else []
    doctor = exp.config.get("doctor")
    mask = doctor.get("mask") if isinstance(doctor, dict) else None
    other = mask.get("combine_with") if isinstance(mask, dict) else None
    if other and str(other) not in needs:
        needs.append(str(other))
    return needs


def transition(store: RunStore, run_id: str, from_statuses: tuple[str, ...], **fields: Any) -> bool:
    """Set ``fields`` on a run only if its status is one of ``from_statuses``; True when it was."""
    return store.transition(run_id, from_statuses, **fields)


def log_event(rec: RunRecord, level: str, msg: str) -> None:
    """Append a `log` event to the run's event stream (one O_APPEND write: never interleaves)."""
    append_event(rec.run_dir, make_event("log", rec.run_id, level=level, msg=msg, source="scheduler"))


# --------------------------------------------------------------------------------------- dependencies


def dependency_state(store: RunStore, experiment: str) -> tuple[str, str | None]:
    """("ready" | "wait" | "blocked", reason) of a run that needs ``experiment`` to have completed.

    The newest runs are read first and every answer comes from that read (or a later look, which
    can only find more completed): asking "has one completed?" before reading them let a run that
    completed in between look neither completed nor pending, and its dependant was blocked by an
    upstream that had just succeeded (seen under load, in the reboot test).
    """
    runs = store.list_runs(experiment=experiment, limit=50)
    if any(r.status == RunStatus.COMPLETED for r in runs) or store.latest_completed(experiment):
        return "ready", None  # (the second look finds one older than the newest 50)
    pending = [r for r in runs if r.status in PENDING]
    if pending:
        return "wait", f"waiting for {experiment} ({pending[0].run_id} {pending[0].status})"
    blocked = [r for r in runs if r.status == RunStatus.BLOCKED]
    if blocked:
        return "blocked", f"{experiment} is blocked: {blocked[0].error or 'see mdtui queue'}"
    if runs:
        last = runs[0]
        detail = f": {last.error}" if last.error else ""
        return "blocked", (
            f"upstream {experiment} {last.status} (run {last.run_id}){detail}; "
            f"queue it again with `mdtui queue add {experiment}`"
        )
    return "blocked", f"upstream {experiment} has no run; queue it with `mdtui queue add {experiment}`"


def needs_state(store: RunStore, needs: tuple[str, ...] | list[str]) -> tuple[str, str | None]:
    """The combined state of several dependencies: blocked beats wait beats ready."""
    worst: tuple[str, str | None] = ("ready", None)
    for experiment in needs:
        state = dependency_state(store, experiment)
        if state[0] == "blocked":
            return state
        if state[0] == "wait":
            worst = state
    return worst


# --------------------------------------------------------------------------------------- enqueue


def expand_with_upstreams(store: RunStore, plan: Plan, exps: list[Experiment]) -> list[Experiment]:
    """``exps`` plus every dependency that has no completed, pending or blocked run, upstreams first."""
    chosen = {e.name: e for e in exps}
    todo = list(exps)
    while todo:
        exp = todo.pop()
        for name in dependencies(exp):
            if name in chosen or name not in plan.experiments:
                continue
            # pending first: a run that completes between the two looks is then seen by one of them
            if store.list_runs(experiment=name, statuses=[*PENDING, RunStatus.BLOCKED], limit=1):
                continue
            if store.latest_completed(name) is not None:
                continue
            chosen[name] = plan.experiments[name]
            todo.append(chosen[name])
    return dependency_order(plan, list(chosen.values()))


def add(
    store: RunStore,
    plan: Plan,
    exp: Experiment,
    *,
    seed: int,
    gpus: int,
    devices: list[str] | None,
) -> RunRecord:
    """Create one queued run of ``exp`` and put it at the end of the queue."""
    require_data(plan, exp)  # pre-flight: a run whose dataset is missing is never queued
    run_id = store.new_run_id()
    # init_checkpoint / combine_path are resolved at launch, once the upstream has completed
    config = engine_config(plan, exp, run_id=run_id, seed=seed, cache_dir=cache_dir(store))
    needs = dependencies(exp)
    rec = store.write_run(
        exp,
        config,
        seed=seed,
        devices=[],
        status=RunStatus.QUEUED.value,
        run_id=run_id,
        extra={"needs": needs},
    )
    # the run's index row and its queue entry in one transaction: a process killed between two
    # (a kill -9 of the TUI) left a run shown `queued` that no queue entry would ever start
    with connection(store) as conn, transaction(conn):
        store.insert(rec, conn)
        row = conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM queue").fetchone()
        conn.execute(
            "INSERT INTO queue (run_id, position, experiment, needs, gpus, devices, enqueued_t) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                rec.run_id,
                row[0],
                exp.name,
                json.dumps(needs),
                gpus,
                json.dumps(devices) if devices else None,
                time.time(),
            ),
        )
        conn.execute(
            "INSERT OR REPLACE INTO queue_state (key, value) VALUES ('experiments', ?)",
            (str(plan.settings.path),),
        )
    return rec


# --------------------------------------------------------------------------------------- reading


def entries(store: RunStore, *, include_launched: bool = True) -> list[QueueEntry]:
    """Waiting entries in queue order (positions 1..n), then launched ones still in the table."""
    with connection(store) as conn:
        conn.execute("BEGIN")  # one read snapshot: the queue rows and their runs agree
        try:
            rows = conn.execute(
                "SELECT * FROM queue ORDER BY launched_t IS NOT NULL, position, enqueued_t"
            ).fetchall()
            runs = store.index_rows(
                ("run_id", "status", "devices"), run_ids=[r["run_id"] for r in rows], conn=conn
            )
        finally:
            conn.execute("COMMIT")
    status_of = {run_id: status for run_id, status, _ in runs}
    assigned_of = {run_id: json.loads(devices or "[]") for run_id, _, devices in runs}
    out: list[QueueEntry] = []
    position = 0
    for row in rows:
        waiting = row["launched_t"] is None
        if not waiting and not include_launched:
            continue
        position += waiting
        out.append(
            QueueEntry(
                run_id=row["run_id"],
                position=position if waiting else 0,
                experiment=row["experiment"],
                status=status_of.get(row["run_id"], RunStatus.LOST.value),  # a run gone from the index
                needs=tuple(json.loads(row["needs"] or "[]")),
                gpus=int(row["gpus"]),
                devices=tuple(json.loads(row["devices"])) if row["devices"] else None,
                enqueued_t=float(row["enqueued_t"]),
                launched_t=row["launched_t"],
                reason=row["reason"],
                assigned=tuple(assigned_of.get(row["run_id"], ())),
            )
        )
    return out


def set_reason(store: RunStore, run_id: str, reason: str | None) -> None:
    with connection(store) as conn:
        conn.execute("UPDATE queue SET reason=? WHERE run_id=? AND reason IS NOT ?", (reason, run_id, reason))


def claim(store: RunStore, run_id: str, devices: list[str]) -> bool:
    """Move a run from queued to starting on ``devices`` and mark its entry launched, in one transaction.

    The conditional UPDATE is the only way out of ``queued``: whoever changes the row wins, everyone
    else sees zero rows changed, so a run is never launched twice.
    """
    now = time.time()
    fields = {"status": RunStatus.STARTING.value, "devices": devices, "started_t": now}
    with connection(store) as conn, transaction(conn):
        if not store.transition_in(conn, run_id, (RunStatus.QUEUED,), **fields):
            return False
        conn.execute("UPDATE queue SET launched_t=?, reason=NULL WHERE run_id=?", (now, run_id))
    store.mirror_run_json(run_id, fields)
    return True


def mark_launched(store: RunStore, run_id: str) -> None:
    with connection(store) as conn:
        conn.execute("UPDATE queue SET launched_t=?, reason=NULL WHERE run_id=?", (time.time(), run_id))


def unmark_launched(store: RunStore, run_id: str) -> None:
    with connection(store) as conn:
        conn.execute("UPDATE queue SET launched_t=NULL WHERE run_id=?", (run_id,))


def remove(store: RunStore, run_id: str) -> None:
    with connection(store) as conn:
        conn.execute("DELETE FROM queue WHERE run_id=?", (run_id,))


def state(store: RunStore, key: str) -> str | None:
    with connection(store) as conn:
        row = conn.execute("SELECT value FROM queue_state WHERE key=?", (key,)).fetchone()
    return row["value"] if row else None


def set_state(store: RunStore, key: str, value: str | None) -> None:
    with connection(store) as conn:
        if value is None:
            conn.execute("DELETE FROM queue_state WHERE key=?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO queue_state (key, value) VALUES (?, ?)", (key, value))


# --------------------------------------------------------------------------------------- editing


def find(store: RunStore, ref: str) -> QueueEntry:
    """A queue entry by run id or unique prefix/suffix; QueueError listing the queue otherwise."""
    all_entries = entries(store)
    exact = [e for e in all_entries if e.run_id == ref]
    matched = exact or [
        e for e in all_entries if ref and (e.run_id.startswith(ref) or e.run_id.endswith(ref))
    ]
    if len(matched) == 1:
        return matched[0]
    if len(matched) > 1:
        raise QueueError(
            f'"{ref}" matches {len(matched)} queued runs: {", ".join(e.run_id for e in matched)}'
        )
    listed = ", ".join(f"{e.run_id} ({e.experiment})" for e in all_entries[:8]) or "the queue is empty"
    raise QueueError(f'no queued run "{ref}"; queued: {listed}')


def cancel_waiting(store: RunStore, run_id: str) -> bool:
    """Cancel a run that has not been launched; False when the scheduler launched it first."""
    if (
        end_unstarted(store, run_id, RunStatus.CANCELLED, "cancelled from the queue", from_statuses=WAITING)
        is None
    ):
        return False
    remove(store, run_id)
    return True


def move(store: RunStore, run_id: str, position: int) -> int:
    """Put a waiting run at ``position`` (1-based, clamped); returns the position it got."""
    with connection(store) as conn, transaction(conn):
        rows = conn.execute(
            "SELECT run_id FROM queue WHERE launched_t IS NULL ORDER BY position, enqueued_t"
        ).fetchall()
        order = [r["run_id"] for r in rows]
        if run_id not in order:
            raise QueueError(f"run {run_id} is not waiting in the queue (it was launched or removed)")
        order.remove(run_id)
        index = max(0, min(position - 1, len(order)))
        order.insert(index, run_id)
        for pos, rid in enumerate(order, start=1):
            conn.execute("UPDATE queue SET position=? WHERE run_id=?", (pos, rid))
    return index + 1
