"""Fault injection with real processes (issue 8): kill -9 anywhere, concurrent CLIs, a full disk.

After every fault: each run has an honest status at the next ``reconcile(store)``, ``last.pt`` is a
whole checkpoint (the previous or the new one), events readers skip torn lines, RESULTS.md and the
SQLite index are intact, and ``--resume`` continues a resumable run. The engine is
tests/fixtures/fake_engine.py except where checkpoints matter, where the real engine trains a tiny
synthetic config.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, TINY_TOML, wait_for

from engine.schema.events import encode, make_event, read_events
from mdtui.execution import ledger, supervise
from mdtui.execution.reconcile import reconcile
from mdtui.registry.plan import load_plan
from mdtui.runs.prepare import create_run_for
from mdtui.runs.store import RunStore
from mdtui.scheduling import scheduler
from mdtui.system.processes import process_alive

LONG = """
[experiment.long]
group = "demo"
epochs = 60

[experiment.multi]
group = "other"
seeds = [1, 2, 3, 4, 5]
epochs = 2
"""
RNG = random.Random(int(os.environ.get("FAULT_SEED", time.time_ns() % 10_000)))


def _project(tmp_path: Path, extra: str = LONG) -> tuple[object, RunStore]:
    path = tmp_path / "experiments.toml"
    path.write_text(TINY_TOML + extra, encoding="utf-8")
    plan = load_plan(path, env={})
    return plan, RunStore(plan.settings.runs_dir, experiments_file=path)


def _integrity(store: RunStore) -> None:
    conn = sqlite3.connect(store.db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def _results_intact(log: Path) -> list[str]:
    """RESULTS.md parses: whole lines only, every entry names its run once."""
    if not log.exists():
        return []
    text = log.read_text(encoding="utf-8")
    assert text.endswith("\n")
    entries = [ln for ln in text.splitlines() if ln.startswith("- ")]
    runs = [ln.split("run `")[1].split("`")[0] for ln in entries if "run `" in ln]
    assert len(runs) == len(set(runs)), f"an entry was written twice:\n{text}"
    return runs


def _kill_group(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def cleanup():
    """Stores whose live processes are killed at teardown, whatever the test left behind."""
    stores: list[RunStore] = []
    yield stores
    for store in stores:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if "mdtui.scheduling.scheduler" in cmd and str(store.runs_dir) in cmd:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        for rec in store.list_runs():
            for pid in (rec.supervisor_pid, rec.pid):
                if pid and process_alive(pid, rec.proc_start if pid == rec.pid else rec.supervisor_start):
                    _kill_group(pid)


# --------------------------------------------------------------------------- torn event lines (unit)


def test_appending_after_a_torn_line_keeps_the_next_event(tmp_path: Path) -> None:
    """A resumed engine appends to the events of a killed one: its first event must not be lost."""
    from engine.sinks import EventSink

    path = tmp_path / "events.jsonl"
    whole = encode(make_event("run_started", "r", t=1.0, total_epochs=2))
    path.write_text(whole + "\n" + whole[:17])  # the kill tore the second line
    assert [e["type"] for e in read_events(path) if isinstance(e, dict)] == ["run_started"]
    sink = EventSink("r", path)
    sink.emit("run_started", total_epochs=2)
    sink.close()
    parsed = read_events(path)
    assert [e["type"] for e in parsed if isinstance(e, dict)] == ["run_started", "run_started"]
    assert any(not isinstance(e, dict) for e in parsed)  # the torn half is kept as text, not misread


# --------------------------------------------------------------------------- kill -9: the real engine


def _engine_running(store: RunStore, run_id: str):
    rec = store.get(run_id)
    return rec if rec and rec.pid and rec.status == "running" else None


def _kill_during_checkpoint_write(ckpt_dir: Path, pid: int, start: float, timeout: float) -> bool:
    """SIGKILL ``pid`` the moment a checkpoint temp file appears; True when one was caught mid-write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(pid, start):
        try:
            names = os.listdir(ckpt_dir)
        except FileNotFoundError:
            names = []
        if "last.pt" in names and any(n.endswith(".tmp") for n in names):
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.0005)
    os.kill(pid, signal.SIGKILL)  # never caught one: kill at this (random) moment instead
    return False


@pytest.mark.slow
def test_kill_9_real_engine_mid_checkpoint_then_resume(tmp_path: Path, monkeypatch, cleanup) -> None:
    import torch

    from mdtui.commands.run import resume_run
    from mdtui.execution.backends import launcher_for

    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan, store = _project(tmp_path)
    cleanup.append(store)
    rec = create_run_for(plan, store, plan.experiments["long"], seed=0, devices=["cpu"])
    ckpt_dir = Path(rec.run_dir) / "checkpoints"
    pid = supervise.launch(store, rec.run_id, devices=["cpu"])
    running = wait_for(lambda: _engine_running(store, rec.run_id), timeout=60)
    wait_for(lambda: (ckpt_dir / "last.pt").exists(), timeout=60)
    time.sleep(RNG.uniform(0.0, 0.5))
    caught = _kill_during_checkpoint_write(ckpt_dir, running.pid, running.proc_start, timeout=15)
    assert supervise.wait_supervisor(pid, timeout=30)

    final = store.get(rec.run_id)
    assert final.status == "failed" and "SIGKILL" in final.error, final.error
    assert reconcile(store) == []  # the supervisor already told the truth
    for name in ("last.pt", "best.pt"):
        state = torch.load(ckpt_dir / name, weights_only=True)  # whole: the previous or the new one
        assert state["format"] == "mdtui-engine-1"
    killed_at = torch.load(ckpt_dir / "last.pt", weights_only=True)["epoch"]
    _integrity(store)
    assert rec.run_id in _results_intact(plan.settings.results_log)

    pid2 = resume_run(launcher_for(store, plan), rec.run_id, device=None).supervisor_pid
    assert supervise.wait_supervisor(pid2, timeout=120)
    done = store.get(rec.run_id)
    assert done.status == "completed", done.error
    events = [e for e in read_events(Path(rec.run_dir) / "events.jsonl") if isinstance(e, dict)]
    epochs = sorted({e["epoch"] for e in events if e["type"] == "epoch"})
    assert epochs == list(range(60)), f"missing epochs after resume (killed at {killed_at}, caught={caught})"
    resumed = [e for e in events if e["type"] == "run_started"][-1]
    assert resumed["world"]["resumed_from"]["epoch"] == killed_at
    assert done.epochs_done == 60
    assert not [p.name for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]  # the torn temp file is gone
    _integrity(store)


@pytest.mark.slow
def test_kill_9_supervisor_stops_the_real_engine_then_resume_completes(
    tmp_path: Path, monkeypatch, cleanup
) -> None:
    """The engine ends with its supervisor: within seconds, with a loadable last.pt; the run is lost
    (one "Incomplete runs" line) and `mdtui run --resume` completes it (its entry replaces the line)."""
    import torch

    EPOCHS = 6  # noqa: N806 (a constant of this test)
    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan, store = _project(tmp_path, LONG.replace("epochs = 60", f"epochs = {EPOCHS}"))
    cleanup.append(store)
    rec = create_run_for(plan, store, plan.experiments["long"], seed=0, devices=["cpu"])
    run_dir = Path(rec.run_dir)
    events = run_dir / "events.jsonl"
    sup = supervise.launch(store, rec.run_id, devices=["cpu"])
    running = wait_for(lambda: _engine_running(store, rec.run_id), timeout=60)
    wait_for(lambda: events.exists() and '"type":"epoch"' in events.read_text(), timeout=120)
    os.kill(sup, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: not process_alive(running.pid, running.proc_start), timeout=10, interval=0.02)
    stopped_after = time.monotonic() - killed_at
    assert supervise.wait_supervisor(sup, timeout=10)
    ending = [e for e in read_events(events) if isinstance(e, dict)][-1]
    assert ending["type"] == "run_finished" and ending["status"] == "stopped", ending
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["format"] == "mdtui-engine-1" and 1 <= last["epoch"] < EPOCHS
    assert "its parent" in (run_dir / "stderr.log").read_text()  # the engine says why it stopped

    assert [(r.run_id, r.status) for r in reconcile(store)] == [(rec.run_id, "lost")]
    lines = [ln for ln in _results_lines(plan) if rec.run_id in ln]
    assert len(lines) == 1 and " lost after " in lines[0], lines
    # resume is refused until the engine's process group is gone: an orphan's zombie is reaped by
    # init, which some containers do only every few seconds
    wait_for(lambda: not ledger.engine_alive(store.get(rec.run_id)), timeout=30, interval=0.1)

    cli = [
        sys.executable,
        "-m",
        "mdtui",
        "-f",
        str(plan.settings.path),
        "run",
        "--resume",
        rec.run_id,
        "--json",
    ]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    final = store.get(rec.run_id)
    assert final.status == "completed" and final.epochs_done == EPOCHS, final.error
    epochs = sorted({e["epoch"] for e in read_events(events) if isinstance(e, dict) and e["type"] == "epoch"})
    assert epochs == list(range(EPOCHS))
    lines = [ln for ln in _results_lines(plan) if rec.run_id in ln]
    assert len(lines) == 1 and "acc1 is" in lines[0], lines  # the lost line gave way to the entry
    assert stopped_after < 10


def _results_lines(plan) -> list[str]:
    log = Path(plan.settings.results_log)
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


# A supervisor killed (SIGKILL, by itself) right after one of its writes, named by FAULT_KILL_AFTER.
KILL_AFTER_WRITE = textwrap.dedent(
    """
    import os
    if os.environ.get("FAULT_KILL_AFTER"):
        import signal
        import mdtui.system.fs as _fs
        _write = _fs.atomic_write_text
        def atomic_write_text(path, text, **kwargs):
            _write(path, text, **kwargs)
            if os.path.basename(os.fspath(path)) == os.environ["FAULT_KILL_AFTER"]:
                os.kill(os.getpid(), signal.SIGKILL)
        _fs.atomic_write_text = atomic_write_text
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("killed_after", ["RESULTS.md", "exit.json"])
def test_supervisor_killed_while_recording_the_end_converges_at_reconcile(
    tmp_path: Path, fake_engine, killed_after: str, cleanup
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AFTER_WRITE)
    plan, store = _project(tmp_path)
    cleanup.append(store)
    rec = create_run_for(plan, store, plan.experiments["tiny"], seed=0, devices=["cpu"])
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{REPO}", "FAULT_KILL_AFTER": killed_after}
    sup = supervise.launch(store, rec.run_id, devices=["cpu"], env=env)
    assert supervise.wait_supervisor(sup, timeout=30)
    run_dir = Path(rec.run_dir)
    assert store.get(rec.run_id).status == "running"  # killed before the index row
    assert (run_dir / "exit.json").exists() == (killed_after == "exit.json")
    assert [(r.run_id, r.status) for r in reconcile(store)] == [(rec.run_id, "completed")]
    final = store.get(rec.run_id)
    assert final.epochs_done == 3 and final.best_acc1 == 70.0
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert json.loads((run_dir / "exit.json").read_text())["status"] == "completed"
    assert (run_dir / "artifacts" / "curves.png").is_file()
    log_text = Path(plan.settings.results_log).read_text(encoding="utf-8")
    assert _results_intact(plan.settings.results_log) == [rec.run_id]
    assert reconcile(store) == []
    assert Path(plan.settings.results_log).read_text(encoding="utf-8") == log_text  # never twice


# --------------------------------------------------------------------------- kill -9: engine or supervisor


@pytest.mark.slow
def test_kill_9_engine_or_supervisor_at_random_moments(
    tmp_path: Path, fake_engine, monkeypatch, cleanup
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.3")
    plan, store = _project(tmp_path)
    cleanup.append(store)
    victims = {}
    for i in range(6):
        rec = create_run_for(plan, store, plan.experiments["tiny"], seed=i, devices=["cpu"])
        sup = supervise.launch(store, rec.run_id, devices=["cpu"])
        victims[rec.run_id] = ("engine" if i % 2 else "supervisor", sup)
    time.sleep(RNG.uniform(0.3, 0.8))
    for run_id, (target, sup) in victims.items():
        rec = store.get(run_id)
        if target == "engine" and rec.pid and process_alive(rec.pid, rec.proc_start):
            os.kill(rec.pid, signal.SIGKILL)
        elif target == "supervisor":
            with contextlib.suppress(ProcessLookupError):
                os.kill(sup, signal.SIGKILL)
        time.sleep(RNG.uniform(0.0, 0.2))
    for run_id, (_target, sup) in victims.items():
        assert supervise.wait_supervisor(sup, timeout=30)
        rec = store.get(run_id)
        if rec.pid:  # an orphaned engine (its supervisor died) stops with it, finishes or is killed
            wait_for(lambda r=rec: not process_alive(r.pid, r.proc_start), timeout=30)
    reconcile(store)
    for run_id, (target, _sup) in victims.items():
        rec = store.get(run_id)
        exit_json = Path(rec.run_dir) / "exit.json"
        assert rec.status in ("completed", "failed", "lost"), (target, rec.status)
        if rec.status == "failed":
            assert "SIGKILL" in rec.error and target == "engine"
        if rec.status == "lost":  # the engine stopped with its supervisor (or died with it)
            assert target == "supervisor" and json.loads(exit_json.read_text())["status"] == "lost"
        if rec.status == "completed":  # the kill came after the end
            assert json.loads(exit_json.read_text())["status"] == "completed"
        read_events(Path(rec.run_dir) / "events.jsonl")
    assert reconcile(store) == []
    _integrity(store)
    _results_intact(plan.settings.results_log)


# --------------------------------------------------------------------------- the scheduler and concurrent CLIs


def _launch_count(rec) -> int:
    log = Path(rec.run_dir) / "stderr.log"
    text = log.read_text() if log.exists() else ""
    return sum(
        1 for ln in text.splitlines() if ln.startswith("[mdtui.execution.supervise]") and " starting " in ln
    )


def _no_device_shared_at_once(runs) -> None:
    spans = [(r.devices, r.started_t, r.ended_t, r.run_id) for r in runs]
    for i, (dev_a, start_a, end_a, id_a) in enumerate(spans):
        for dev_b, start_b, end_b, id_b in spans[i + 1 :]:
            if set(dev_a) & set(dev_b):
                assert end_a <= start_b or end_b <= start_a, f"{id_a} and {id_b} shared {dev_a} at once"


@pytest.fixture
def two_fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps([{}, {}]))
    monkeypatch.setenv("MDTUI_FAKE_GPUS", str(path))
    monkeypatch.setenv("MDTUI_SCHEDULER_POLL", "0.1")


def _drain(store: RunStore, plan, timeout: float = 40.0) -> None:
    def drained() -> bool:
        scheduler.ensure_scheduler(store.runs_dir, plan.settings.path)  # what any CLI verb does
        return not scheduler.has_work(store) and not scheduler.scheduler_running(store.runs_dir)

    wait_for(drained, timeout=timeout, interval=0.2)


@pytest.mark.slow
def test_kill_9_scheduler_at_random_moments(
    tmp_path, fake_engine, two_fake_gpus, monkeypatch, cleanup
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.2")
    plan, store = _project(tmp_path)
    cleanup.append(store)
    records = scheduler.enqueue(store, plan, ["multi", "tiny"])
    for _ in range(4):
        pid = scheduler.ensure_scheduler(store.runs_dir, plan.settings.path)
        if pid is None:
            break
        time.sleep(RNG.uniform(0.05, 0.6))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not scheduler.scheduler_running(store.runs_dir), timeout=10)
    _drain(store, plan)
    runs = [store.get(r.run_id) for r in records]
    assert [r.status for r in runs] == ["completed"] * len(runs), [
        (r.run_id, r.status, r.error) for r in runs
    ]
    assert [_launch_count(r) for r in runs] == [1] * len(runs)
    _no_device_shared_at_once(runs)
    _integrity(store)
    assert sorted(_results_intact(plan.settings.results_log)) == sorted(r.run_id for r in runs)


@pytest.mark.slow
def test_two_clis_and_the_scheduler_at_once(
    tmp_path, fake_engine, two_fake_gpus, monkeypatch, cleanup
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.2")
    plan, store = _project(tmp_path)
    cleanup.append(store)
    cmd = [sys.executable, "-m", "mdtui", "-f", str(plan.settings.path), "queue", "add", "--json"]
    procs = [
        subprocess.Popen([*cmd, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("multi", "tiny-focal", "tiny-focal")
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    queued = [row["run_id"] for out, _err in outputs for row in json.loads(out)]
    # 5 x multi, 2 x tiny-focal and its upstream tiny exactly once: the second command sees it queued
    assert len(queued) == len(set(queued)) == 8, outputs
    assert sorted(store.get(q).experiment for q in queued).count("tiny") == 1
    _drain(store, plan)
    runs = [store.get(run_id) for run_id in queued]
    assert [r.status for r in runs] == ["completed"] * 8, [(r.experiment, r.status, r.error) for r in runs]
    assert [_launch_count(r) for r in runs] == [1] * 8
    _no_device_shared_at_once(runs)
    started = (store.runs_dir / scheduler.LOG_NAME).read_text().count(" started for ")
    assert started >= 1
    _integrity(store)


# --------------------------------------------------------------------------- kill -9: writers of RESULTS.md and the index

WRITER = """
import sys
from pathlib import Path
from mdtui.results.markdown import append_entry
log, tag = Path(sys.argv[1]), sys.argv[2]
for i in range(100000):
    append_entry(log, "g" + str(i % 3), f"- entry {tag}-{i}, run `{tag}-{i}`", marker=f"run `{tag}-{i}`")
"""


@pytest.mark.slow
def test_kill_9_while_writing_results_md(tmp_path: Path) -> None:
    log = tmp_path / "RESULTS.md"
    for round_ in range(3):
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(log), f"w{round_}{k}"], cwd=REPO)
            for k in range(2)
        ]
        time.sleep(RNG.uniform(0.8, 1.5))
        for proc in procs:
            proc.kill()
            proc.wait()
        runs = _results_intact(log)
        for k in range(2):
            mine = sorted(int(r.split("-")[1]) for r in runs if r.startswith(f"w{round_}{k}-"))
            assert mine == list(range(len(mine))), "an entry was lost in the middle"
    from mdtui.results.markdown import append_entry, headings

    assert append_entry(log, "g0", "- after the kills, run `final`", marker="run `final`")  # lock released
    names = [text for _, _, text in headings(log.read_text().splitlines())]
    assert sorted(names) == sorted(set(names))  # no section duplicated by a torn write


INDEX_WRITER = """
import sys
from pathlib import Path
from mdtui.runs.store import RunStore
store = RunStore(Path(sys.argv[1]))
ids = sys.argv[2:]
i = 0
while True:
    i += 1
    store.update(ids[i % len(ids)], epochs_done=i, status="running")
    if i % 20 == 0:
        store.reindex()
"""


@pytest.mark.slow
def test_kill_9_while_writing_the_index(tmp_path: Path) -> None:
    plan, store = _project(tmp_path)
    ids = [
        create_run_for(plan, store, plan.experiments["tiny"], seed=s, devices=["cpu"]).run_id
        for s in range(3)
    ]
    for _ in range(3):
        procs = [
            subprocess.Popen([sys.executable, "-c", INDEX_WRITER, str(store.runs_dir), *ids], cwd=REPO)
            for _ in range(2)
        ]
        time.sleep(RNG.uniform(0.5, 1.2))
        for proc in procs:
            proc.kill()
            proc.wait()
        _integrity(store)
        assert sorted(r.run_id for r in store.list_runs()) == sorted(ids)
        for run_id in ids:
            json.loads((store.get(run_id).run_dir / "run.json").read_text())  # never torn
    assert store.reindex() == 3


# --------------------------------------------------------------------------- a full disk


def test_full_disk_during_checkpoint_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    import engine.checkpoint as ckpt
    from engine.sinks import ListSink
    from engine.train import run
    from tests.engine.engine_helpers import tiny_config

    torch.set_num_threads(1)
    import engine.train

    real_save, real_save_checkpoint = torch.save, engine.train.save_checkpoint
    writing: list[str] = []

    def save_checkpoint(path, payload):
        writing.append(Path(path).name)
        return real_save_checkpoint(path, payload)

    def filling_save(obj, fh, *args, **kwargs):
        if writing.count("last.pt") < 2:  # epoch 0's last.pt (and any best.pt) get written
            return real_save(obj, fh, *args, **kwargs)
        fh.write(b"\x80\x02half a checkpoint")  # the disk fills in the middle of epoch 1's last.pt
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(engine.train, "save_checkpoint", save_checkpoint)
    monkeypatch.setattr(ckpt.torch, "save", filling_save)
    sink = ListSink()
    status = run(tiny_config(run_id="disk", epochs=4), tmp_path, sink)
    monkeypatch.undo()
    assert status == "failed"
    error = sink.events[-1]["error"]
    assert "No space left on device" in error and "is the disk full?" in error and "last.pt" in error, error
    ckpt_dir = tmp_path / "checkpoints"
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]  # no half file left behind
    last = torch.load(ckpt_dir / "last.pt", weights_only=True)
    assert last["epoch"] == 1  # the previous last.pt, whole
    torch.load(ckpt_dir / "best.pt", weights_only=True)


SITECUSTOMIZE = textwrap.dedent(
    """
    import errno, os
    if os.environ.get("FAULT_ENOSPC_AT_EPOCH"):
        import engine.sinks as _sinks
        _at = int(os.environ["FAULT_ENOSPC_AT_EPOCH"])
        _full = []
        _write = _sinks.EventSink.write
        def write(self, event):
            if self._file is not None and (_full or (event.get("type") == "epoch" and event.get("epoch") == _at)):
                _full.append(1)  # once full, every later write fails too
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return _write(self, event)
        _sinks.EventSink.write = write
    """
)


@pytest.mark.slow
def test_full_disk_during_event_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup) -> None:
    torch = pytest.importorskip("torch")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)
    plan, store = _project(tmp_path)
    cleanup.append(store)
    rec = create_run_for(plan, store, plan.experiments["tiny"], seed=0, devices=["cpu"])
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{REPO}", "FAULT_ENOSPC_AT_EPOCH": "1", "OMP_NUM_THREADS": "1"}
    pid = supervise.launch(store, rec.run_id, devices=["cpu"], env=env)
    assert supervise.wait_supervisor(pid, timeout=90)
    final = store.get(rec.run_id)
    assert final.status == "failed"
    assert "No space left on device" in final.error and "is the disk full?" in final.error, final.error
    assert "events.jsonl" in final.error and 'File "' not in final.error  # a reason, not a traceback
    last = torch.load(Path(rec.run_dir) / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1  # epoch 0 was saved before the disk filled
    events = [e for e in read_events(Path(rec.run_dir) / "events.jsonl") if isinstance(e, dict)]
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [0]
    _integrity(store)


@pytest.mark.slow
def test_a_resumed_run_killed_again_reports_the_new_reason(
    tmp_path, fake_engine, monkeypatch, cleanup
) -> None:
    """The events of an earlier session (its error, its run_finished) must not speak for the resumed one."""
    from engine.schema.events import reduce_events
    from mdtui.commands.run import resume_run
    from mdtui.execution.backends import launcher_for

    plan, store = _project(tmp_path)
    cleanup.append(store)
    monkeypatch.setenv("FAKE_FAIL_AT", "1")
    rec = create_run_for(plan, store, plan.experiments["tiny"], seed=0, devices=["cpu"])
    assert supervise.wait_supervisor(supervise.launch(store, rec.run_id, devices=["cpu"]), timeout=30)
    assert store.get(rec.run_id).error == "fake failure at epoch 1"
    monkeypatch.setenv("FAKE_FAIL_AT", "-1")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "20")
    pid = resume_run(launcher_for(store, plan), rec.run_id, device=None).supervisor_pid
    running = wait_for(lambda: _engine_running(store, rec.run_id), timeout=20)
    events_path = Path(rec.run_dir) / "events.jsonl"
    wait_for(lambda: events_path.read_text().count('"run_started"') == 2)
    state = reduce_events(read_events(events_path))
    assert state.status == "running" and state.error is None  # what the TUI shows while it runs
    os.kill(running.pid, signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=30)
    final = store.get(rec.run_id)
    assert final.status == "failed" and "SIGKILL" in final.error, final.error
