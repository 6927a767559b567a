"""Run directories, the SQLite index and reconciliation (mdtui/runs/store.py, index.py, writer.py,
rebuild.py, mdtui/system/fs.py)."""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.schema.events import encode, make_event
from mdtui.execution.reconcile import reconcile
from mdtui.runs.status import RunStatus
from mdtui.runs.store import RunRecord, RunStore
from mdtui.system import fs as fsutil
from mdtui.system.processes import process_alive, process_start_time


def _new_run(store: RunStore, plan, name: str = "tiny", **kw):
    from mdtui.runs.prepare import create_run_for

    return create_run_for(plan, store, plan.experiments[name], seed=kw.pop("seed", 0), devices=["cpu"], **kw)


def _write_events(run_dir: Path, run_id: str, *, finished: str | None = "completed") -> None:
    lines = [
        make_event("run_started", run_id, config={}, total_epochs=3, steps_per_epoch=2, device="cpu"),
        make_event(
            "epoch",
            run_id,
            epoch=0,
            train={"loss": 1.5, "acc1": 40.0},
            eval={"loss": 1.2, "acc1": 55.5, "acc5": 90.0},
            best_acc1=55.5,
            best_epoch=0,
            seconds=0.1,
        ),
    ]
    if finished:
        summary = {
            "best_acc1": 55.5,
            "best_epoch": 0,
            "last_acc1": 55.5,
            "acc5": 90.0,
            "err1": 44.5,
            "epochs_done": 1,
        }
        lines.append(make_event("run_finished", run_id, status=finished, summary=summary))
    text = "\n".join(encode(e) for e in lines) + "\n"
    (run_dir / "events.jsonl").write_text(text + '{"torn": ', encoding="utf-8")


# --------------------------------------------------------------------------- fsutil


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "exit.json"
    fsutil.atomic_write_json(target, {"status": "completed"})
    fsutil.atomic_write_json(target, {"status": "failed", "code": 1})
    assert json.loads(target.read_text()) == {"status": "failed", "code": 1}
    assert [p.name for p in target.parent.iterdir()] == ["exit.json"]
    assert fsutil.read_json(tmp_path / "missing.json") is None


def test_atomic_write_json_refuses_nan_without_touching_the_target(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    fsutil.atomic_write_json(target, {"ok": 1})
    with pytest.raises(ValueError):
        fsutil.atomic_write_json(target, {"bad": float("nan")})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("r32-refl[loss.threshold=0.4]", "r32-refl[loss.threshold=0.4]"),
        ("../../etc/passwd", "etc_passwd"),
        ("my exp/with slash", "my_exp_with_slash"),
        ("..", "run"),
        ("a\x00b\nc", "a_b_c"),
    ],
)
def test_sanitize_name(name: str, expected: str) -> None:
    cleaned = fsutil.sanitize_name(name)
    assert cleaned == expected
    assert "/" not in cleaned and ".." not in cleaned and " " not in cleaned


def test_file_lock_is_exclusive(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with fsutil.file_lock(lock):
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parents[2])!r})\nfrom mdtui.system.fs import try_lock\nprint(try_lock({str(lock)!r}))"
        held = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert held.stdout.strip() == "None"
    fd = fsutil.try_lock(lock)
    assert fd is not None
    os.close(fd)


# --------------------------------------------------------------------------- creating and reading


def test_create_run_writes_a_complete_run_directory(store: RunStore, tiny_plan) -> None:
    rec = _new_run(store, tiny_plan, seed=3)
    run_dir = Path(rec.run_dir)
    assert run_dir.parent == store.runs_dir / "tiny"
    assert run_dir.name == rec.run_id
    assert len(rec.run_id) == len("20250101-120000-abcd") and rec.run_id[8] == "-" and rec.run_id[15] == "-"
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "artifacts").is_dir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run_id"] == rec.run_id and config["seed"] == 3 and config["experiment"] == "tiny"
    info = json.loads((run_dir / "run.json").read_text())
    for key in (
        "experiment",
        "sweep",
        "command",
        "devices",
        "host",
        "pid",
        "pgid",
        "proc_start",
        "git",
        "packages",
        "python",
        "seed",
        "status",
    ):
        assert key in info, key
    assert info["packages"]["typer"] and "torch" in info["packages"]
    assert info["experiments_file"] == str(tiny_plan.settings.path)
    assert info["git"] is None  # tmp_path is not a git work tree
    assert store.get(rec.run_id) == rec
    assert rec.total_epochs == 3 and rec.status == "created" and rec.devices == ["cpu"]


def test_git_info_records_commit_and_dirty_flag(tmp_path: Path) -> None:
    from mdtui.system.processes import git_info

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }

    def run(*a):
        return subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True, env=env)  # noqa: E731

    run("init", "-q")
    (tmp_path / "experiments.toml").write_text("x = 1\n")
    run("add", "experiments.toml")
    run("commit", "-q", "-m", "init")
    clean = git_info(tmp_path)
    assert clean is not None and len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "experiments.toml").write_text("x = 2\n")
    assert git_info(tmp_path)["dirty"] is True


def test_list_update_and_latest_completed(store: RunStore, tiny_plan) -> None:
    first = _new_run(store, tiny_plan)
    second = _new_run(store, tiny_plan)
    assert [r.run_id for r in store.list_runs()] == [second.run_id, first.run_id]
    assert store.latest_completed("tiny") is None
    store.update(first.run_id, status="completed", best_acc1=61.5, note="good")
    assert store.latest_completed("tiny").run_id == first.run_id
    assert [r.run_id for r in store.list_runs(statuses=["created"])] == [second.run_id]
    assert store.list_runs(limit=1)[0].run_id == second.run_id
    mirrored = json.loads((Path(first.run_dir) / "run.json").read_text())
    assert mirrored["status"] == "completed" and mirrored["best_acc1"] == 61.5 and mirrored["note"] == "good"
    with pytest.raises(ValueError):
        store.update(first.run_id, bogus=1)
    with pytest.raises(ValueError):
        store.update(first.run_id, status="finished")


def test_from_without_completed_upstream_is_a_clear_error(store: RunStore, tiny_plan) -> None:
    from mdtui.runs.prepare import RunSetupError

    with pytest.raises(RunSetupError, match='starts from "tiny", which has no completed run'):
        _new_run(store, tiny_plan, "tiny-focal")
    up = _new_run(store, tiny_plan)
    store.update(up.run_id, status="completed")
    (Path(up.run_dir) / "checkpoints" / "best.pt").write_bytes(b"x")
    rec = _new_run(store, tiny_plan, "tiny-focal")
    config = json.loads((Path(rec.run_dir) / "config.json").read_text())
    assert config["init_checkpoint"] == str(Path(up.run_dir) / "checkpoints" / "best.pt")


def test_resolve_by_id_prefix_suffix_and_experiment(store: RunStore, tiny_plan) -> None:
    a = _new_run(store, tiny_plan)
    b = _new_run(store, tiny_plan)
    assert store.resolve(a.run_id).run_id == a.run_id
    assert store.resolve(a.run_id[-4:]).run_id == a.run_id or a.run_id[-4:] == b.run_id[-4:]
    assert store.resolve("tiny").run_id == b.run_id  # latest run of the experiment
    with pytest.raises(LookupError, match="matches 2 runs"):
        store.resolve(a.run_id[:8])  # same date prefix
    with pytest.raises(LookupError, match="closest: tiny"):
        store.resolve("tinny")


def test_concurrent_updates_keep_every_row(store: RunStore, tiny_plan) -> None:
    runs = [_new_run(store, tiny_plan) for _ in range(4)]

    def work(rec) -> None:
        for i in range(15):
            store.update(rec.run_id, epochs_done=i + 1)

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(store.get(r.run_id).epochs_done == 15 for r in runs)
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


# --------------------------------------------------------------------------- reindex and refresh


def test_reindex_rebuilds_the_index_from_directories(store: RunStore, tiny_plan) -> None:
    done = _new_run(store, tiny_plan)
    _write_events(Path(done.run_dir), done.run_id)
    fsutil.atomic_write_json(
        Path(done.run_dir) / "exit.json", {"status": "completed", "exit_code": 0, "ended_t": 5.0}
    )
    pending = _new_run(store, tiny_plan)
    (store.runs_dir / "tiny" / "not-a-run").mkdir()
    store.db_path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(store.db_path) + suffix).unlink(missing_ok=True)
    fresh = RunStore(store.runs_dir)
    assert fresh.list_runs() == []
    assert fresh.reindex() == 2
    rec = fresh.get(done.run_id)
    assert rec.status == "completed" and rec.exit_code == 0 and rec.ended_t == 5.0
    assert rec.best_acc1 == 55.5 and rec.err1 == 44.5 and rec.epochs_done == 1 and rec.acc5 == 90.0
    assert fresh.get(pending.run_id).status == "created"


def test_old_schema_version_triggers_a_rebuild(store: RunStore, tiny_plan) -> None:
    rec = _new_run(store, tiny_plan)
    conn = store.connect()
    conn.execute("UPDATE meta SET value='0' WHERE key='store_schema'")
    conn.execute("DELETE FROM runs")
    conn.close()
    assert RunStore(store.runs_dir).get(rec.run_id) is not None


def test_refresh_finalises_from_exit_json_or_marks_lost(store: RunStore, tiny_plan) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = process_start_time(dead.pid)
    dead.wait()
    finished = _new_run(store, tiny_plan)
    vanished = _new_run(store, tiny_plan)
    for rec in (finished, vanished):
        store.update(
            rec.run_id, status="running", supervisor_pid=dead.pid, supervisor_start=dead_start or 1.0
        )
    _write_events(Path(finished.run_dir), finished.run_id, finished="stopped")
    fsutil.atomic_write_json(Path(finished.run_dir) / "exit.json", {"status": "stopped", "exit_code": 0})
    changed = {r.run_id: r.status for r in reconcile(store)}
    assert changed == {finished.run_id: "stopped", vanished.run_id: "lost"}
    assert store.get(vanished.run_id).error.startswith("the supervisor vanished")
    assert store.get(finished.run_id).best_acc1 == 55.5
    assert reconcile(store) == []


def test_refresh_never_trusts_a_reused_pid(store: RunStore, tiny_plan) -> None:
    rec = _new_run(store, tiny_plan)
    me = os.getpid()
    # our own pid is alive, but with another start time it is someone else's process
    store.update(
        rec.run_id, status="running", supervisor_pid=me, supervisor_start=process_start_time(me) - 100
    )
    assert not process_alive(me, process_start_time(me) - 100)
    assert [r.status for r in reconcile(store)] == ["lost"]
    live = _new_run(store, tiny_plan)
    store.update(live.run_id, status="running", supervisor_pid=me, supervisor_start=process_start_time(me))
    assert reconcile(store) == [] and store.get(live.run_id).status == "running"


def test_refresh_keeps_the_engines_own_ending_when_only_the_supervisor_vanished(
    store: RunStore, tiny_plan
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = process_start_time(dead.pid)
    dead.wait()
    rec = _new_run(store, tiny_plan)
    store.update(rec.run_id, status="running", supervisor_pid=dead.pid, supervisor_start=dead_start or 1.0)
    _write_events(Path(rec.run_dir), rec.run_id, finished="completed")
    assert [r.status for r in reconcile(store)] == ["completed"]
    exit_info = json.loads((Path(rec.run_dir) / "exit.json").read_text())
    assert exit_info["status"] == "completed" and "supervisor vanished" in exit_info["note"]
    assert store.get(rec.run_id).best_acc1 == 55.5


def test_logout_kill_setting_is_detected_unless_the_user_lingers(tmp_path: Path) -> None:
    from mdtui.system.processes import logout_kills_processes

    conf = tmp_path / "logind.conf"
    drop_in = tmp_path / "logind.conf.d"
    drop_in.mkdir()
    linger = tmp_path / "linger"
    linger.mkdir()
    confs = (conf, drop_in)
    assert not logout_kills_processes(confs, linger, user="ann")  # no files: systemd's default (no)
    conf.write_text("[Login]\n#KillUserProcesses=yes\nKillUserProcesses=yes\n")
    assert logout_kills_processes(confs, linger, user="ann")
    (drop_in / "50-keep.conf").write_text("[Login]\nKillUserProcesses=no\n")
    assert not logout_kills_processes(confs, linger, user="ann")  # a drop-in read later wins
    (drop_in / "50-keep.conf").unlink()
    (linger / "ann").touch()
    assert not logout_kills_processes(confs, linger, user="ann")  # lingering users keep their processes


# --------------------------------------------------------------------------- the store owns the runs table

_RUNS_SQL = re.compile(r"\b(FROM|JOIN|UPDATE|INTO|TABLE)\s+\"?runs\b", re.IGNORECASE)
_PRIVATE = {"_to_sql", "_upsert", "_row_to_record", "_record_row"}


def _runs_sql_uses(path: Path, root: Path) -> list[str]:
    """SQL text naming the ``runs`` table, or the store's private row helpers, in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if _RUNS_SQL.search(node.value):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.strip()[:60]!r}")
        elif isinstance(node, ast.Attribute) and node.attr in _PRIVATE:
            found.append(f"{path.relative_to(root)}:{node.lineno}: .{node.attr}")
    return found


def test_only_the_store_runs_sql_on_the_runs_table() -> None:
    root = Path(__file__).resolve().parents[2]
    index_py = root / "mdtui" / "runs" / "index.py"
    offenders = [
        u for p in sorted((root / "mdtui").rglob("*.py")) if p != index_py for u in _runs_sql_uses(p, root)
    ]
    assert not offenders, "ask mdtui.runs.store (transition, index_rows, ...):\n" + "\n".join(offenders)


def test_the_sql_scan_sees_runs_sql(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text(
        '"""Docstrings may say UPDATE runs."""\n'
        'conn.execute(f"UPDATE runs SET {sets}")\n'
        'conn.execute("SELECT q.* FROM queue q LEFT JOIN runs r ON r.run_id = q.run_id")\n'
        "store._to_sql('devices', [])\n"
        'conn.execute("UPDATE queue SET reason=?")\n',
        encoding="utf-8",
    )
    assert sorted(int(u.split(":")[1]) for u in _runs_sql_uses(tmp_path / "x.py", tmp_path)) == [2, 3, 4]


def test_transition_changes_only_a_run_in_an_allowed_status(store: RunStore, tiny_plan) -> None:
    rec = _new_run(store, tiny_plan, status="queued")
    assert not store.transition(rec.run_id, ("created",), status="cancelled")
    assert store.get(rec.run_id).status == "queued"
    assert store.transition(
        rec.run_id, ("queued", "blocked"), status="starting", devices=["0", "1"], started_t=7.0
    )
    again = store.get(rec.run_id)
    assert again.status == "starting" and again.devices == ["0", "1"] and again.started_t == 7.0
    mirrored = json.loads((Path(rec.run_dir) / "run.json").read_text())
    assert mirrored["status"] == "starting" and mirrored["devices"] == ["0", "1"]
    assert not store.transition(rec.run_id, ("queued",), status="starting")  # the loser of a race
    with pytest.raises(ValueError):
        store.transition(rec.run_id, ("starting",), status="finished")


def test_transition_in_commits_or_rolls_back_with_the_callers_transaction(store: RunStore, tiny_plan) -> None:
    rec = _new_run(store, tiny_plan, status="queued")
    conn = store.connect()
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert store.transition_in(conn, rec.run_id, ("queued",), status="starting", devices=["0"])
        conn.execute("ROLLBACK")
        assert store.get(rec.run_id).status == "queued"
        conn.execute("BEGIN IMMEDIATE")
        assert store.transition_in(conn, rec.run_id, ("queued",), status="starting", devices=["0"])
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert store.get(rec.run_id).devices == ["0"]
    # run.json is the caller's to mirror after its commit
    assert json.loads((Path(rec.run_dir) / "run.json").read_text())["status"] == "queued"
    store.mirror_run_json(rec.run_id, {"status": "starting"})
    assert json.loads((Path(rec.run_dir) / "run.json").read_text())["status"] == "starting"


def test_index_rows_gives_raw_columns_newest_first_and_filters(store: RunStore, tiny_plan) -> None:
    old = _new_run(store, tiny_plan)
    new = _new_run(store, tiny_plan)
    store.update(old.run_id, status="completed", sweep={"optim.lr": 0.1}, leaky=True)
    rows = store.index_rows(["run_id", "status", "sweep", "leaky", "devices"])
    assert [r[0] for r in rows] == [new.run_id, old.run_id]
    assert rows[1][1:] == ("completed", '{"optim.lr": 0.1}', 1, '["cpu"]')  # as stored: JSON text, 0/1
    assert store.index_rows(["run_id"], statuses=[RunStatus.COMPLETED]) == [(old.run_id,)]
    assert store.index_rows(["run_id"], run_ids=[old.run_id, "nope"]) == [(old.run_id,)]
    assert store.index_rows(["run_id"], run_ids=[]) == []
    many = [f"id-{i}" for i in range(40_000)] + [new.run_id]  # more than SQLite's parameter limit
    assert store.index_rows(["run_id"], run_ids=many) == [(new.run_id,)]
    with pytest.raises(ValueError, match="unknown run fields: bogus"):
        store.index_rows(["run_id", "bogus"])


def test_put_records_indexes_in_one_transaction_without_touching_directories(
    store: RunStore, tiny_plan
) -> None:
    kept = _new_run(store, tiny_plan)
    records = [
        RunRecord(
            run_id=f"r{i}", experiment="tiny", run_dir=store.runs_dir / "tiny" / f"r{i}", created_t=float(i)
        )
        for i in range(3)
    ]
    store.put_records(records)
    assert {r.run_id for r in store.list_runs()} == {kept.run_id, "r0", "r1", "r2"}
    assert not (store.runs_dir / "tiny" / "r0").exists()
    store.put_records(records[:1], replace_all=True)
    assert [r.run_id for r in store.list_runs()] == ["r0"]


def test_latest_runs_is_the_newest_run_of_each_experiment(store: RunStore) -> None:
    records = [
        RunRecord(run_id=rid, experiment=exp, run_dir=store.runs_dir / exp / rid, created_t=t, status=status)
        for rid, exp, t, status in (
            ("a1", "a", 1.0, "completed"),
            ("a2", "a", 3.0, "failed"),
            ("b1", "b", 2.0, "completed"),
            ("b3", "b", 5.0, "queued"),
            ("b2", "b", 5.0, "running"),  # same second: the larger id is the newer, as in list_runs
            ("c1", "c[x=1]", 4.0, "lost"),
        )
    ]
    store.put_records(records)
    latest = store.latest_runs()
    assert {exp: rec.run_id for exp, rec in latest.items()} == {"a": "a2", "b": "b3", "c[x=1]": "c1"}
    newest_first = {}
    for rec in store.list_runs():
        newest_first.setdefault(rec.experiment, rec)
    assert latest == newest_first
