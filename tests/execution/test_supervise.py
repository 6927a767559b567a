"""The supervisor with real processes: completed, failed, lost, stopped, detached (mdtui/execution/supervise.py).

The engine is tests/fixtures/fake_engine.py (selected with MDTUI_ENGINE_CMD) except in the last test,
which trains the real engine for a few steps when it is present.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, wait_for

from mdtui.execution import supervise
from mdtui.execution.reconcile import reconcile
from mdtui.runs.prepare import create_run_for
from mdtui.runs.store import RunStore
from mdtui.system.processes import process_alive

pytestmark = pytest.mark.slow


def _start(store: RunStore, plan, *, env: dict[str, str] | None = None, name: str = "tiny"):
    rec = create_run_for(plan, store, plan.experiments[name], seed=0, devices=["cpu"])
    pid = supervise.launch(store, rec.run_id, devices=["cpu"], env=env)
    return rec, pid


def _engine_running(store: RunStore, run_id: str):
    rec = store.get(run_id)
    return rec if rec.pid and rec.status == "running" else None


def _first_step(rec) -> bool:
    events = Path(rec.run_dir) / "events.jsonl"
    return events.exists() and '"type":"step"' in events.read_text()


def test_completed_run_writes_exit_json_and_indexes_metrics(store, tiny_plan, fake_engine) -> None:
    rec, pid = _start(store, tiny_plan)
    assert supervise.wait_supervisor(pid, timeout=30)
    final = store.get(rec.run_id)
    assert final.status == "completed" and final.exit_code == 0
    assert final.best_acc1 == 70.0 and final.best_epoch == 2 and final.epochs_done == 3
    assert final.pid and final.pgid == final.pid and final.proc_start and final.supervisor_pid == pid
    exit_info = json.loads((Path(rec.run_dir) / "exit.json").read_text())
    assert exit_info["status"] == "completed" and exit_info["signal"] is None
    run_dir = Path(rec.run_dir)
    assert '"type":"run_finished"' in (run_dir / "stdout.log").read_text()  # engine stdout went to the file
    assert "status completed" in (run_dir / "stderr.log").read_text()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["command"][-1] == str(run_dir)


def test_a_run_is_never_completed_before_its_results_entry(store, tiny_plan, fake_engine) -> None:
    """exit.json is a promise: run.json, the plots and the RESULTS.md entry exist before it, and the
    index says completed only after it. Watched from outside while the supervisor records the end."""
    rec, pid = _start(store, tiny_plan)
    run_dir = Path(rec.run_dir)
    looks = 0
    while True:
        done = supervise.supervisor_done(pid)
        # observe the later step first, then require the earlier ones (each stays once written)
        indexed = store.get(rec.run_id).status == "completed"
        exit_written = (run_dir / "exit.json").exists()
        if indexed:
            assert exit_written, "the index said completed before exit.json was written"
        if exit_written:
            looks += 1
            assert _results_lines(tiny_plan, rec.run_id), "exit.json before the RESULTS.md entry"
            assert (run_dir / "artifacts" / "curves.png").is_file(), "exit.json before the plots"
            assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
        if done:
            break
        time.sleep(0.002)
    assert looks and store.get(rec.run_id).status == "completed"


def test_a_run_folder_deleted_once_exit_json_appears_stays_deleted(store, tiny_plan, fake_engine) -> None:
    rec, pid = _start(store, tiny_plan)
    run_dir = Path(rec.run_dir)
    wait_for(lambda: (run_dir / "exit.json").exists(), timeout=30, interval=0.001)
    shutil.rmtree(run_dir)  # nothing may be writing into it any more
    assert supervise.wait_supervisor(pid, timeout=30)
    assert not run_dir.exists()
    assert store.get(rec.run_id).status == "completed"
    assert reconcile(store) == [] and not run_dir.exists()


def test_the_engine_sees_exactly_its_devices(store, tiny_plan, fake_engine) -> None:
    assert supervise.cuda_env(["cpu"]) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ""}
    rec = create_run_for(tiny_plan, store, tiny_plan.experiments["tiny"], seed=0, devices=["2", "0"])
    pid = supervise.launch(store, rec.run_id, devices=["2", "0"], env={"CUDA_VISIBLE_DEVICES": "7"})
    assert supervise.wait_supervisor(pid, timeout=30)
    started = json.loads((Path(rec.run_dir) / "events.jsonl").read_text().splitlines()[0])
    assert started["world"] == {
        "CUDA_VISIBLE_DEVICES": "2,0",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "PYTHONUNBUFFERED": "1",
    }
    assert store.get(rec.run_id).devices == ["2", "0"]


def test_engine_failure_reports_its_error(store, tiny_plan, fake_engine) -> None:
    rec, pid = _start(store, tiny_plan, env={"FAKE_FAIL_AT": "1"})
    assert supervise.wait_supervisor(pid, timeout=30)
    final = store.get(rec.run_id)
    assert final.status == "failed" and final.exit_code == 1
    assert final.error == "fake failure at epoch 1"


def test_engine_kill_9_is_failed(store, tiny_plan, fake_engine, reap) -> None:
    rec, pid = _start(store, tiny_plan, env={"FAKE_EPOCH_SECONDS": "20"})
    running = wait_for(lambda: _engine_running(store, rec.run_id))
    reap.append(running.pgid)
    os.kill(running.pid, signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=30)
    final = store.get(rec.run_id)
    assert final.status == "failed" and final.exit_code == -9
    assert "SIGKILL" in final.error and "not sent by mdtui" in final.error


def test_foreign_sigterm_is_failed_not_stopped(store, tiny_plan, fake_engine, reap) -> None:
    rec, pid = _start(store, tiny_plan, env={"FAKE_EPOCH_SECONDS": "2"})
    running = wait_for(lambda: _engine_running(store, rec.run_id))
    reap.append(running.pgid)
    wait_for(lambda: _first_step(running))  # its SIGTERM handler is installed
    os.kill(running.pid, signal.SIGTERM)  # someone else's signal: the engine stops, mdtui did not ask
    assert supervise.wait_supervisor(pid, timeout=30)
    final = store.get(rec.run_id)
    assert final.status == "failed" and "did not send" in final.error


def _results_lines(plan, run_id: str) -> list[str]:
    log = Path(plan.settings.results_log)
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    return [ln for ln in text.splitlines() if f"run `{run_id}`" in ln]


def test_engine_stops_when_its_supervisor_dies_and_the_run_is_lost(
    store, tiny_plan, fake_engine, reap
) -> None:
    """kill -9 of the supervisor: the parent-death signal stops the engine gracefully (last.pt)."""
    rec, pid = _start(store, tiny_plan, env={"FAKE_EPOCH_SECONDS": "4"})
    running = wait_for(lambda: _engine_running(store, rec.run_id))
    reap.append(running.pgid)
    wait_for(lambda: _first_step(running))  # its SIGTERM handler is installed
    os.kill(pid, signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=10)
    wait_for(lambda: not process_alive(running.pid, running.proc_start), timeout=5)  # ~1 step, not the run
    run_dir = Path(rec.run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert '"status":"stopped"' in (run_dir / "events.jsonl").read_text().splitlines()[-1]
    assert store.get(rec.run_id).status == "running"  # nobody has looked yet
    changed = reconcile(store)
    assert [(r.run_id, r.status) for r in changed] == [(rec.run_id, "lost")]
    assert "saved last.pt and stopped" in changed[0].error
    assert json.loads((run_dir / "exit.json").read_text())["status"] == "lost"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "lost"
    assert (
        len(_results_lines(tiny_plan, rec.run_id)) == 1
        and " lost " in _results_lines(tiny_plan, rec.run_id)[0]
    )
    assert reconcile(store) == []


def test_an_engine_that_outlives_its_supervisor_is_looked_at_again(
    store, tiny_plan, fake_engine, reap
) -> None:
    """Lost while its engine runs on; the engine then completes: the next reconcile takes its ending."""
    rec, pid = _start(store, tiny_plan, env={"FAKE_EPOCH_SECONDS": "0.4", "FAKE_IGNORE_TERM": "1"})
    running = wait_for(lambda: _engine_running(store, rec.run_id))
    reap.append(running.pgid)
    wait_for(lambda: _first_step(running))
    os.kill(running.pid, signal.SIGSTOP)  # hold the engine: alive, whatever the machine's load
    os.kill(pid, signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=10)
    changed = reconcile(store)
    assert [(r.run_id, r.status) for r in changed] == [(rec.run_id, "lost")]
    assert f"engine pid {running.pid} is still running" in changed[0].error
    run_dir = Path(rec.run_dir)
    assert not (run_dir / "exit.json").exists()  # not settled: the engine may still end by itself
    assert " lost " in _results_lines(tiny_plan, rec.run_id)[0]
    assert reconcile(store) == []  # nothing new while it runs
    os.kill(running.pid, signal.SIGCONT)
    wait_for(lambda: not process_alive(running.pid, running.proc_start), timeout=20)
    changed = reconcile(store)
    assert [(r.run_id, r.status) for r in changed] == [(rec.run_id, "completed")]
    final = store.get(rec.run_id)
    assert final.epochs_done == 3 and final.best_acc1 == 70.0 and final.error is None
    assert json.loads((run_dir / "exit.json").read_text())["status"] == "completed"
    lines = _results_lines(tiny_plan, rec.run_id)
    assert len(lines) == 1 and "acc1 is 70.00%" in lines[0]  # the lost line is gone
    assert reconcile(store) == []


def test_an_ignored_parent_death_signal_leaves_the_run_lost_until_the_engine_is_gone(
    store, tiny_plan, fake_engine, reap
) -> None:
    rec, pid = _start(store, tiny_plan, env={"FAKE_EPOCH_SECONDS": "2", "FAKE_IGNORE_TERM": "1"})
    running = wait_for(lambda: _engine_running(store, rec.run_id))
    reap.append(running.pgid)
    wait_for(lambda: _first_step(running))  # SIGTERM ignored from here on
    os.kill(running.pid, signal.SIGSTOP)  # and held: alive when reconcile looks, whatever the load
    os.kill(pid, signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=10)
    assert [r.status for r in reconcile(store)] == ["lost"]
    assert process_alive(running.pid, running.proc_start)
    os.killpg(running.pgid, signal.SIGKILL)  # e.g. `mdtui stop` reaching the orphan
    wait_for(lambda: not process_alive(running.pid, running.proc_start), timeout=10)
    changed = reconcile(store)
    assert [(r.status, r.error) for r in changed] == [
        ("lost", "the supervisor vanished without writing exit.json")
    ]
    assert json.loads((Path(rec.run_dir) / "exit.json").read_text())["status"] == "lost"
    assert len(_results_lines(tiny_plan, rec.run_id)) == 1  # its line was brought up to date, not doubled


def test_stop_gives_stopped_with_last_checkpoint(store, tiny_plan, fake_engine, reap) -> None:
    rec, pid = _start(store, tiny_plan, env={"FAKE_EPOCH_SECONDS": "1"})
    running = wait_for(lambda: _engine_running(store, rec.run_id))
    reap.append(running.pgid)
    wait_for(lambda: _first_step(running))
    assert supervise.stop(store, rec.run_id, grace=10, wait=True)
    final = store.get(rec.run_id)
    assert final.status == "stopped" and final.exit_code == 0 and final.error is None
    assert (Path(rec.run_dir) / "checkpoints" / "last.pt").is_file()
    assert json.loads((Path(rec.run_dir) / "exit.json").read_text())["stop_requested"] is True
    assert not supervise.stop(store, rec.run_id)  # nothing left to stop


def test_stop_escalates_to_sigkill_after_grace(store, tiny_plan, fake_engine, reap) -> None:
    rec, pid = _start(store, tiny_plan, env={"FAKE_EPOCH_SECONDS": "2", "FAKE_IGNORE_TERM": "1"})
    running = wait_for(lambda: _engine_running(store, rec.run_id))
    reap.append(running.pgid)
    wait_for(lambda: _first_step(running))
    assert supervise.stop(store, rec.run_id, grace=0.5)  # returns at once; the supervisor escalates
    assert supervise.wait_supervisor(pid, timeout=20)
    final = store.get(rec.run_id)
    assert final.status == "stopped" and final.exit_code == -9 and "SIGKILL" in final.error


def test_detached_run_survives_its_launching_session(tiny_toml, fake_engine, reap) -> None:
    """`mdtui run --detach` from a shell; the whole session of that shell is then killed."""
    env = {**os.environ, "FAKE_EPOCH_SECONDS": "0.6", "PYTHONPATH": str(REPO)}
    script = f"{sys.executable} -m mdtui -f {tiny_toml} run tiny --detach --json > launched.json; sleep 60"
    shell = subprocess.Popen(["bash", "-c", script], cwd=tiny_toml.parent, env=env, start_new_session=True)
    reap.append(shell.pid)
    launched = tiny_toml.parent / "launched.json"
    wait_for(lambda: launched.exists() and launched.read_text().strip().endswith("]"), timeout=30)
    run_id = json.loads(launched.read_text())[0]["run_id"]
    os.killpg(shell.pid, signal.SIGHUP)  # the terminal goes away ...
    os.killpg(shell.pid, signal.SIGKILL)  # ... and takes its whole process group with it
    shell.wait(timeout=10)
    store = RunStore(tiny_toml.parent / "runs")
    wait_for(lambda: store.get(run_id).status == "completed", timeout=40)
    assert store.get(run_id).epochs_done == 3


@pytest.mark.skipif(not (REPO / "engine" / "__main__.py").exists(), reason="the real engine is not built yet")
def test_real_engine_stop_leaves_a_loadable_last_checkpoint(store, tiny_plan, monkeypatch, reap) -> None:
    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)
    from mdtui.registry.plan import load_plan

    toml = Path(tiny_plan.settings.path)
    toml.write_text(toml.read_text().replace("epochs = 3", "epochs = 50"))
    plan = load_plan(toml)
    rec, pid = _start(store, plan)
    running = wait_for(lambda: _engine_running(store, rec.run_id), timeout=60)
    reap.append(running.pgid)
    events = Path(rec.run_dir) / "events.jsonl"
    wait_for(lambda: events.exists() and '"type":"step"' in events.read_text(), timeout=120)
    assert supervise.stop(store, rec.run_id, grace=60, wait=True)
    final = store.get(rec.run_id)
    assert final.status == "stopped", final.error
    import torch

    ckpt = torch.load(Path(rec.run_dir) / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert isinstance(ckpt, dict) and ckpt


def test_cpu_runs_sharing_the_machine_split_its_cores() -> None:
    from mdtui.execution.supervise import cpu_threads_env

    assert cpu_threads_env(["cpu"], 1) == {}  # alone: torch's default (all cores)
    assert cpu_threads_env(["0"], 4) == {}  # GPU runs: the CPU is not their bottleneck
    shared = cpu_threads_env(["cpu"], 2)
    assert shared["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
