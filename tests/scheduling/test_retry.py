"""Surviving the reboot (mdtui/scheduling/retry.py, mdtui/commands/service.py): the retry policy, its
keys, and a simulated reboot with real processes -- every process of the project killed with SIGKILL,
the recorded boot id changed, the scheduler started as the systemd unit starts it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import TINY_TOML, wait_for

from mdtui.commands.service import scheduler_command
from mdtui.registry.plan import ExperimentsError, load_plan
from mdtui.runs.store import RunStore
from mdtui.scheduling import scheduler
from mdtui.scheduling.retry import same_failure, should_retry

LOST = "the supervisor vanished without writing exit.json"


def project(tmp_path: Path, settings: str = "", tiny: str = "") -> Path:
    text = TINY_TOML.replace("stop_grace_seconds = 10\n", f"stop_grace_seconds = 10\n{settings}\n")
    text = text.replace('loss = "ce"\n', f'loss = "ce"\n{tiny}\n', 1)
    path = tmp_path / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the policy


def test_retries_are_counted_per_status_and_need_a_checkpoint() -> None:
    policy = {"lost": 2, "failed": 0}
    assert should_retry("lost", LOST, 1, policy, [], has_last=True).go
    assert not should_retry("failed", "boom", 1, policy, [], has_last=True).go
    assert "no checkpoints/last.pt" in should_retry("lost", LOST, 0, policy, [], has_last=False).why
    used = [
        {"status": "lost", "reason": LOST, "epochs_done": 1},
        {"status": "lost", "reason": LOST, "epochs_done": 3},
    ]
    assert "2 lost retries are used up" in should_retry("lost", LOST, 5, policy, used, has_last=True).why
    assert not should_retry("completed", None, 3, policy, [], has_last=True).go


def test_a_run_that_fails_the_same_way_without_progress_is_not_retried_again() -> None:
    policy = {"failed": 5}
    history = [{"status": "failed", "reason": "CUDA out of memory (pid 4242)", "epochs_done": 4}]
    same = should_retry("failed", "CUDA out of memory (pid 977)", 4, policy, history, has_last=True)
    assert not same.go and "same way" in same.why
    assert should_retry(
        "failed", "CUDA out of memory (pid 977)", 6, policy, history, has_last=True
    ).go  # progress
    assert should_retry("failed", "NaN loss", 4, policy, history, has_last=True).go  # another failure
    # lost after each reboot, but further each time: resumed until the count is used
    assert should_retry(
        "lost", LOST, 9, {"lost": 5}, [{"status": "lost", "reason": LOST, "epochs_done": 4}], has_last=True
    ).go
    assert same_failure("exit code 137 after 12 s", "exit code 1 after 3 s") and not same_failure("a", "b")


def test_an_ending_committed_after_a_pass_began_keeps_the_scheduler_for_one_more_pass(
    tmp_path, monkeypatch
) -> None:
    """A run's ended_t is taken before its row is committed: a failure can carry a time before the
    pass that missed it. The scheduler must stay for another pass until the ending is answered."""
    from mdtui.scheduling import retry

    plan = load_plan(project(tmp_path))
    store = RunStore(plan.settings.runs_dir)
    rec = store.create_run(plan.experiments["tiny"], {}, seed=0, devices=["cpu"])
    monkeypatch.setattr(retry, "_LAST_PASS", [1_000_000.0])
    monkeypatch.setattr(retry, "_ANSWERED", {})
    monkeypatch.setattr(retry, "_RESUMED", set())
    # the pass began at t=1e6 and saw nothing; the failure it missed ended at t=1e6 - 1
    store.update(rec.run_id, status="failed", ended_t=1_000_000.0 - 1, error="boom")
    assert retry.watching(store)
    retry._ANSWERED[rec.run_id] = retry.ending_key(store.get(rec.run_id))  # a later pass answered it
    assert not retry.watching(store)


def test_on_lost_and_retries_are_validated_and_resolved(tmp_path) -> None:
    plan = load_plan(project(tmp_path, settings='on_lost = "resume"', tiny="retries = { failed = 1 }"))
    assert plan.settings.on_lost == "resume"
    assert plan.experiments["tiny"].retries == {"lost": 3, "failed": 1}
    assert plan.experiments["tiny-focal"].retries == {"lost": 3, "failed": 0}
    assert load_plan(project(tmp_path)).experiments["tiny"].retries == {"lost": 0, "failed": 0}
    for settings, tiny, says in (
        ('on_lost = "retry"', "", 'key settings.on_lost: expected "keep"'),
        ("", "retries = { lots = 2 }", 'unknown status "lots" (did you mean "lost"?)'),
        ("", "retries = { lost = -1 }", "lost = -1: expected a number of retries from 0 to 100"),
        ("", "retries = 2", "expected a table of retry counts"),
    ):
        with pytest.raises(ExperimentsError) as info:
            load_plan(project(tmp_path, settings=settings, tiny=tiny))
        assert says in info.value.format(), info.value.format()


# --------------------------------------------------------------------------- real processes


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch, fake_engine: str):
    """Fast polling; every process a test leaves alive is killed at teardown."""
    monkeypatch.setenv("MDTUI_SCHEDULER_POLL", "0.1")
    monkeypatch.delenv("MDTUI_FAKE_GPUS", raising=False)
    monkeypatch.setattr("mdtui.system.gpus._nvml_devices", lambda: [])  # the CPU only, one run at a time
    procs: list[int] = []
    yield procs
    for pid in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def project_processes(store: RunStore) -> list[int]:
    """Every process of the project: its scheduler, and each run's supervisor and engine group."""
    import psutil

    pids = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "mdtui.scheduling.scheduler" in (p.info.get("cmdline") or [])
        and str(store.runs_dir) in (p.info.get("cmdline") or [])
    ]
    for rec in store.list_runs():
        pids += [pid for pid in (rec.supervisor_pid, rec.pgid) if pid]
    return pids


def kill_everything(store: RunStore) -> None:
    import psutil

    for pid in project_processes(store):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # supervisors and engines lead their own groups
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            not [
                p
                for p in project_processes(store)
                if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            ]
        )
    )


def epochs_of(run_dir: Path) -> list[int]:
    lines = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines() if x.strip()]
    return [e["epoch"] for e in lines if e["type"] == "epoch"]


@pytest.mark.slow
def test_a_simulated_reboot_resumes_lost_runs_and_the_queue_goes_on(tmp_path, live, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "1.0")
    toml = project(tmp_path, settings='on_lost = "resume"')
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    tiny, focal = scheduler.enqueue(store, plan, ["tiny-focal"])  # tiny first: tiny-focal starts from it
    live.append(scheduler.ensure_scheduler(store.runs_dir, toml))
    wait_for(lambda: (tiny.run_dir / "checkpoints" / "last.pt").exists(), timeout=30)
    running = store.get(tiny.run_id)
    assert running.status == "running" and running.epochs_done < 3

    kill_everything(store)  # the power goes: scheduler, supervisor and engine die at once
    for rec in store.list_runs():
        if rec.boot_id:  # ... and the machine boots again: another boot id
            store.update(rec.run_id, boot_id="00000000-0000-0000-0000-000000000000")

    journal = tmp_path / "journal.log"  # what the unit's journal would hold
    with open(journal, "wb") as out:
        boot = subprocess.Popen(
            scheduler_command(store.runs_dir.resolve(), toml.resolve()),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    live.append(boot.pid)
    assert boot.wait(timeout=90) == 0  # it drains the queue and exits, as at every boot

    tiny_after, focal_after = store.get(tiny.run_id), store.get(focal.run_id)
    assert (tiny_after.status, focal_after.status) == ("completed", "completed")
    history = json.loads((tiny.run_dir / "run.json").read_text())["retries"]
    assert [(h["status"], h["reason"]) for h in history] == [("lost", LOST)]
    assert epochs_of(tiny.run_dir) == [0, 1, 2]  # resumed from last.pt: no epoch ran twice
    assert epochs_of(focal.run_dir) == [0, 1]
    assert sorted(p.name for p in store.runs_dir.glob("*/*") if p.is_dir()) == sorted(
        [tiny.run_id, focal.run_id]
    )
    config = json.loads((focal.run_dir / "config.json").read_text())
    assert config["init_checkpoint"] == str(tiny.run_dir / "checkpoints" / "best.pt")
    assert "resumed from last.pt (lost retry 1 of 3)" in journal.read_text()
    assert "blocked" not in journal.read_text()  # tiny-focal waited for the resume, never "queue it again"


@pytest.mark.slow
def test_a_run_failing_the_same_way_is_retried_once_not_forever(tmp_path, live, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_FAIL_AT", "1")  # every attempt fails at epoch 1, after last.pt of epoch 0
    toml = project(tmp_path, tiny="retries = { failed = 5 }")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    (run,) = scheduler.enqueue(store, plan, ["tiny"])
    live.append(scheduler.ensure_scheduler(store.runs_dir, toml))
    wait_for(lambda: not scheduler.scheduler_running(store.runs_dir) and store.get(run.run_id).finished, 60)
    assert store.get(run.run_id).status == "failed"
    assert len(json.loads((run.run_dir / "run.json").read_text())["retries"]) == 1
    log = (store.runs_dir / "scheduler.log").read_text()
    assert "not resumed: it ended the same way as its last retry" in log
    assert (run.run_dir / "events.jsonl").read_text().count('"type":"run_started"') == 2
