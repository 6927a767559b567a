"""The ledger, the queue and the scheduler (mdtui/execution/ledger.py, mdtui/scheduling/queue.py,
mdtui/scheduling/scheduler.py, mdtui/execution/launcher.py).

Fast tests drive `Scheduler.step()` in-process with a launcher that only records; the slow ones start
the real detached scheduler, real supervisors and the fake engine on fake GPUs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_TOML, wait_for

from mdtui.execution import ledger
from mdtui.execution.launcher import LocalLauncher
from mdtui.runs.store import RunStore
from mdtui.scheduling import queue as runqueue
from mdtui.scheduling import scheduler
from mdtui.system.gpus import CPU_ID, Device, GpuProcess

CHAIN = """
[experiment.tiny-ft]
group = "demo"
from = "tiny-focal"
epochs = 2

[experiment.multi]
group = "other"
seeds = [1, 2, 3, 4, 5]
epochs = 2
"""


def make_project(tmp_path: Path, settings: str = "") -> tuple[object, RunStore]:
    from mdtui.registry.plan import load_plan

    text = TINY_TOML.replace("stop_grace_seconds = 10\n", f"stop_grace_seconds = 10\n{settings}\n") + CHAIN
    path = tmp_path / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    plan = load_plan(path)
    return plan, RunStore(plan.settings.runs_dir, experiments_file=path)


def gpu(index: int, used: int = 0, util: int = 0, procs: tuple[GpuProcess, ...] = ()) -> Device:
    return Device(str(index), f"GPU-{index}", "Fake", used, 24576, util, procs)


class RecordingLauncher:
    """A launcher that starts nothing: runs go straight to `running`; tests finish them by hand."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.submitted: list[tuple[str, list[str]]] = []

    def configure(self, settings: object) -> None:  # the scheduler hands every launcher [settings]
        self.settings = settings

    def submit(self, run_id: str, devices: list[str]) -> None:
        self.submitted.append((run_id, list(devices)))
        self.store.update(run_id, status="running", devices=devices)

    def poll(self, run_id: str) -> str:
        rec = self.store.get(run_id)
        return rec.status if rec else "lost"

    def stop(self, run_id: str, *, wait: bool = False) -> bool:
        self.finish(run_id, "stopped")
        return True

    def kill(self, run_id: str) -> bool:
        return self.stop(run_id)

    def where(self, run_id: str) -> tuple[str, list[str]]:
        rec = self.store.get(run_id)
        return "here", list(rec.devices) if rec else []

    def finish(self, run_id: str, status: str = "completed") -> None:
        rec = self.store.get(run_id)
        (rec.run_dir / "checkpoints" / "best.pt").write_text("weights")
        self.store.update(
            run_id, status=status, ended_t=time.time(), error=None if status == "completed" else "boom"
        )


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """MDTUI_FAKE_GPUS pointing at a JSON file; call the fixture's value to rewrite it."""
    path = tmp_path / "gpus.json"

    def write(devices: list[dict] | int) -> None:
        path.write_text(json.dumps([{} for _ in range(devices)] if isinstance(devices, int) else devices))

    write(2)
    monkeypatch.setenv("MDTUI_FAKE_GPUS", str(path))
    return write


def in_process(tmp_path: Path, settings: str = ""):
    plan, store = make_project(tmp_path, settings)
    launcher = RecordingLauncher(store)
    return plan, store, launcher, scheduler.Scheduler(store, plan.settings.path, launcher)


# --------------------------------------------------------------------------------------- ledger (pure)


def test_ledger_reserves_devices_until_the_run_ends_whatever_the_memory() -> None:
    devices = [gpu(0), gpu(1)]
    held = [ledger.Reservation("r1", ("0",))]  # a run that has not allocated anything yet
    assert ledger.pick(devices, held, ledger.Policy(), 1) == ["1"]
    assert ledger.pick(devices, held, ledger.Policy(), 2) is None
    assert ledger.pick(devices, held, ledger.Policy(runs_per_device=2), 2) == ["1", "0"]


def test_ledger_foreign_processes_count_through_thresholds() -> None:
    alice = (GpuProcess(1234, "alice", 23000, "python"),)
    devices = [gpu(0, used=23000, procs=alice), gpu(1, util=97), gpu(2)]
    policy = ledger.Policy(min_free_memory_mb=2048, max_utilization=90)
    assert ledger.pick(devices, [], policy, 1) == ["2"]
    reasons = {d.id: ledger.blocker(d, policy, ledger.reservation_counts([])) for d in devices}
    assert "alice" in reasons["0"] and "1576 MiB free" in reasons["0"]
    assert "97% busy" in reasons["1"] and reasons["2"] is None


def test_ledger_policies_exclude_max_devices_order_and_candidates() -> None:
    devices = [gpu(i) for i in range(4)]
    assert ledger.pick(devices, [], ledger.Policy(exclude=("0", "GPU-1")), 2) == ["2", "3"]
    assert ledger.pick(devices, [], ledger.Policy(order=("3", "1")), 3) == ["3", "1", "0"]
    held = [ledger.Reservation("r1", ("0",)), ledger.Reservation("r2", ("1",))]
    assert ledger.pick(devices, held, ledger.Policy(max_devices=2), 1) is None
    assert ledger.pick(devices, held, ledger.Policy(max_devices=2, runs_per_device=2), 1) == ["0"]
    assert ledger.pick(devices, [], ledger.Policy(), 1, candidates=["GPU-2", "3"]) == ["2"]
    # the user's own processes elsewhere count towards max_devices too
    mine = [gpu(0), gpu(1), gpu(2, procs=(GpuProcess(1, "me", 100, ""),))]
    assert ledger.pick(mine, [], ledger.Policy(max_devices=2), 2, user="me") == ["0", "2"]
    assert ledger.pick(mine, [], ledger.Policy(max_devices=1), 1, user="me") == ["2"]
    assert ledger.pick(mine, [], ledger.Policy(max_devices=1), 2, user="me") is None


def test_ledger_cpu_only_machine_runs_one_at_a_time_by_default() -> None:
    cpu = [Device(CPU_ID, CPU_ID, "CPU", 0, 0, 0)]
    assert ledger.pick(cpu, [], ledger.Policy(), 4) == [CPU_ID]
    assert ledger.pick(cpu, [ledger.Reservation("r", (CPU_ID,))], ledger.Policy(), 1) is None
    assert ledger.pick(cpu, [ledger.Reservation("r", (CPU_ID,))], ledger.Policy(runs_per_device=2), 1) == [
        CPU_ID
    ]


def test_ledger_never_fits_explains_impossible_requests() -> None:
    devices = [gpu(0), gpu(1)]
    assert "only 2 usable" not in (ledger.never_fits(devices, ledger.Policy(), 2) or "")
    assert "has 2 usable" in ledger.never_fits(devices, ledger.Policy(), 3)
    assert "has 1 usable" in ledger.never_fits(devices, ledger.Policy(exclude=("1",)), 2)
    assert "max_devices = 1" in ledger.never_fits(devices, ledger.Policy(max_devices=1), 2)
    assert "no device 7" in ledger.never_fits(devices, ledger.Policy(), 1, ["7"])
    assert "excluded" in ledger.never_fits(devices, ledger.Policy(exclude=("0",)), 1, ["0"])


# --------------------------------------------------------------------------------------- queue (in-process)


def test_enqueue_queues_missing_upstreams_first_and_not_twice(tmp_path: Path, fake_gpus) -> None:
    plan, store = make_project(tmp_path)
    records = scheduler.enqueue(store, plan, ["tiny-ft"])
    assert [r.experiment for r in records] == ["tiny", "tiny-focal", "tiny-ft"]
    entries = scheduler.queue_entries(store)
    assert [(e.position, e.status, e.needs) for e in entries] == [
        (1, "queued", ()),
        (2, "queued", ("tiny",)),
        (3, "queued", ("tiny-focal",)),
    ]
    # the upstreams are pending now: queueing a dependant again does not queue them again
    again = scheduler.enqueue(store, plan, ["tiny-focal"])
    assert [r.experiment for r in again] == ["tiny-focal"]
    config = json.loads((records[2].run_dir / "config.json").read_text())
    assert config["init_checkpoint"] is None and config["seed"] == 0


def test_enqueue_rejects_requests_this_machine_can_never_meet(tmp_path: Path, fake_gpus) -> None:
    plan, store = make_project(tmp_path, 'exclude_devices = ["1"]')
    with pytest.raises(scheduler.QueueError, match="has 1 usable"):
        scheduler.enqueue(store, plan, ["tiny"], gpus=2)
    with pytest.raises(scheduler.QueueError, match="excluded"):
        scheduler.enqueue(store, plan, ["tiny"], devices=["1"])
    with pytest.raises(LookupError, match="closest"):
        scheduler.enqueue(store, plan, ["tinyy"])
    assert scheduler.queue_entries(store) == []


def test_step_launches_in_order_and_honours_move_pause_cancel(tmp_path: Path, fake_gpus) -> None:
    fake_gpus(1)
    plan, store, launcher, sched = in_process(tmp_path)
    a, b, c = (scheduler.enqueue(store, plan, ["tiny"])[0] for _ in range(3))
    assert scheduler.move(store, c.run_id[-4:], 1) == 1  # a unique suffix names a run
    assert [e.run_id for e in scheduler.queue_entries(store)] == [c.run_id, a.run_id, b.run_id]
    scheduler.pause(store)
    sched.step()
    assert launcher.submitted == []
    assert "paused" in scheduler.queue_entries(store)[0].reason
    assert not scheduler.has_work(store) and not sched.busy()  # a paused queue keeps no scheduler alive
    scheduler.resume(store)
    assert scheduler.has_work(store)
    sched.step()
    sched.step()  # one GPU: the second waits however often we look
    assert launcher.submitted == [(c.run_id, ["0"])]
    waiting = [e for e in scheduler.queue_entries(store) if e.waiting]
    assert [e.position for e in waiting] == [1, 2] and "reserved by 1 mdtui run" in waiting[0].reason
    assert scheduler.cancel(store, b.run_id, launcher=launcher) == "cancelled"
    assert store.get(b.run_id).status == "cancelled"
    launcher.finish(c.run_id)
    sched.step()
    assert launcher.submitted[-1] == (a.run_id, ["0"])
    assert {e.run_id for e in scheduler.queue_entries(store)} == {a.run_id}  # finished and cancelled are gone
    assert scheduler.cancel(store, a.run_id, launcher=launcher) == "stopping"  # launched: cancel stops it
    assert store.get(a.run_id).status == "stopped"
    with pytest.raises(scheduler.QueueError, match="no queued run"):
        scheduler.cancel(store, "nope", launcher=launcher)


def test_failed_upstream_blocks_dependants_until_it_is_queued_again(tmp_path: Path, fake_gpus) -> None:
    plan, store, launcher, sched = in_process(tmp_path)
    tiny, focal, ft = scheduler.enqueue(store, plan, ["tiny-ft"])
    sched.step()
    assert [rid for rid, _ in launcher.submitted] == [tiny.run_id]  # the others wait for it
    assert "waiting for tiny" in scheduler.queue_entries(store)[0].reason
    launcher.finish(tiny.run_id, "failed")
    sched.step()
    assert store.get(focal.run_id).status == "blocked"
    assert "upstream tiny failed" in store.get(focal.run_id).error
    assert store.get(ft.run_id).status == "blocked"
    assert not sched.busy() and not scheduler.has_work(store)  # blocked runs alone keep nothing alive
    retry = scheduler.enqueue(store, plan, ["tiny"])[0]
    assert scheduler.has_work(store)
    sched.step()
    assert store.get(focal.run_id).status == "queued"
    launcher.finish(retry.run_id)
    sched.step()
    assert launcher.submitted[-1][0] == focal.run_id
    config = json.loads((focal.run_dir / "config.json").read_text())
    assert config["init_checkpoint"] == str(retry.run_dir / "checkpoints" / "best.pt")


def test_an_upstream_completing_while_its_state_is_read_never_blocks_its_dependant(
    tmp_path: Path, fake_gpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reboot test blocked tiny-focal with "upstream tiny completed": tiny completed between the
    "has one completed?" and "which are pending?" queries of one look. It may look still running,
    or completed, but never as neither."""
    plan, store, launcher, sched = in_process(tmp_path)
    tiny, focal = scheduler.enqueue(store, plan, ["tiny-focal"])
    sched.step()
    looked = store.latest_completed

    def completes_as_it_is_asked(experiment: str):
        found = looked(experiment)
        launcher.finish(tiny.run_id)  # the run ends right after this query
        return found

    with monkeypatch.context() as patched:
        patched.setattr(store, "latest_completed", completes_as_it_is_asked)
        assert runqueue.dependency_state(store, "tiny")[0] in ("wait", "ready")
    sched.step()
    assert store.get(focal.run_id).status != "blocked"
    assert launcher.submitted[-1][0] == focal.run_id


def test_policies_from_settings_drive_the_scheduler(tmp_path: Path, fake_gpus) -> None:
    fake_gpus(4)
    settings = 'exclude_devices = ["0"]\nmax_devices = 2\nruns_per_device = 2\ndevice_order = ["3", "2", "1"]'
    plan, store, launcher, sched = in_process(tmp_path, settings)
    scheduler.enqueue(store, plan, ["multi"])  # five seeds
    sched.step()
    placed = [devices for _, devices in launcher.submitted]
    # two devices at most, two runs each, in the preferred order, never device 0
    assert placed == [["3"], ["3"], ["2"], ["2"]]
    assert "max_devices" in [e for e in scheduler.queue_entries(store) if e.waiting][0].reason


def test_explicit_devices_wait_for_those_devices(tmp_path: Path, fake_gpus) -> None:
    plan, store, launcher, sched = in_process(tmp_path)
    first = scheduler.enqueue(store, plan, ["tiny"], devices=["1"])[0]
    second = scheduler.enqueue(store, plan, ["tiny"], devices=["1"])[0]
    sched.step()
    assert launcher.submitted == [(first.run_id, ["1"])]
    launcher.finish(first.run_id)
    sched.step()
    assert launcher.submitted[-1] == (second.run_id, ["1"])


def test_claim_is_atomic_against_cancel_and_a_second_claim(tmp_path: Path, fake_gpus) -> None:
    plan, store = make_project(tmp_path)
    rec = scheduler.enqueue(store, plan, ["tiny"])[0]
    assert runqueue.claim(store, rec.run_id, ["0"])
    assert not runqueue.claim(store, rec.run_id, ["1"])
    assert not runqueue.cancel_waiting(store, rec.run_id)
    assert store.get(rec.run_id).devices == ["0"]
    assert json.loads((rec.run_dir / "run.json").read_text())["status"] == "starting"


def test_orphan_claim_of_a_killed_scheduler_goes_back_to_the_queue(tmp_path: Path, fake_gpus) -> None:
    plan, store, launcher, sched = in_process(tmp_path)
    rec = scheduler.enqueue(store, plan, ["tiny"])[0]
    assert runqueue.claim(store, rec.run_id, ["0"])  # ... and the scheduler died before launching
    with runqueue.connection(store) as conn:
        conn.execute("UPDATE queue SET launched_t = launched_t - 60")
    assert scheduler.has_work(store)
    sched.step()
    assert launcher.submitted == [(rec.run_id, ["0"])]  # requeued, then launched exactly once
    sched.step()
    assert len(launcher.submitted) == 1


def test_a_run_that_ended_while_no_scheduler_watched_leaves_the_queue(tmp_path: Path, fake_gpus) -> None:
    """A scheduler killed right as its run finished left the completed run in `mdtui queue` forever."""
    from typer.testing import CliRunner

    from mdtui.cli import app

    plan, store, launcher, sched = in_process(tmp_path)
    rec = scheduler.enqueue(store, plan, ["tiny"])[0]
    sched.step()
    assert [e.status for e in scheduler.queue_entries(store)] == ["running"]
    launcher.finish(rec.run_id)  # ... after the scheduler was killed: nobody removes its entry
    result = CliRunner().invoke(app, ["-f", str(plan.settings.path), "queue", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == []
    assert not scheduler.has_work(store) and not scheduler.scheduler_running(store.runs_dir)


def test_placement_check_warns_when_a_run_sits_on_another_gpu(tmp_path: Path, fake_gpus) -> None:
    plan, store, launcher, sched = in_process(tmp_path)
    rec = scheduler.enqueue(store, plan, ["tiny"])[0]
    sched.step()
    assert launcher.submitted == [(rec.run_id, ["0"])]
    store.update(rec.run_id, supervisor_pid=os.getpid())  # our pid tree stands in for the run's
    fake_gpus([{}, {"processes": [{"pid": os.getpid(), "owner": "me", "memory_mb": 900}]}])
    sched.check_placement()
    events = [json.loads(line) for line in (rec.run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "log" and events[-1]["level"] == "warning"
    assert "given device(s) 0 but its processes are on 1" in events[-1]["msg"]


def test_queue_cli_lists_moves_and_cancels(
    tmp_path: Path, fake_gpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mdtui.cli import app

    plan, store = make_project(tmp_path)
    scheduler.pause(store)  # keep the detached scheduler from launching anything in this test
    toml = str(plan.settings.path)
    runner = CliRunner()
    added = runner.invoke(app, ["-f", toml, "queue", "add", "tiny", "tiny", "--json"])
    assert added.exit_code == 0, added.output
    second = runner.invoke(app, ["-f", toml, "queue", "add", "tiny-focal", "--device", "1", "--json"])
    ids = [r["run_id"] for r in json.loads(added.stdout) + json.loads(second.stdout)]
    assert len(ids) == 2  # tiny was pending already, so tiny-focal did not queue it again
    assert runner.invoke(app, ["-f", toml, "queue", "move", ids[1], "--to", "1"]).exit_code == 0
    listing = json.loads(runner.invoke(app, ["-f", toml, "queue", "--json"]).stdout)
    assert listing["paused"] and [e["run_id"] for e in listing["entries"]] == [ids[1], ids[0]]
    assert listing["entries"][0]["devices"] == ["1"]
    assert "cancelled" in runner.invoke(app, ["-f", toml, "queue", "cancel", ids[0]]).output
    bad = runner.invoke(app, ["-f", toml, "queue", "add", "nosuch"])
    assert bad.exit_code == 2 and "no experiment" in bad.output
    too_many = runner.invoke(app, ["-f", toml, "queue", "add", "tiny", "--gpus", "3"])
    assert too_many.exit_code == 2 and "3 devices needed" in too_many.output
    table = runner.invoke(app, ["-f", toml, "queue"])
    assert "paused" in table.output and ids[1] in table.output


# --------------------------------------------------------------------------------------- real processes


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch, fake_engine: str):
    """Fast polling for detached schedulers; anything a test leaves alive is killed at teardown."""
    monkeypatch.setenv("MDTUI_SCHEDULER_POLL", "0.1")
    stores: list[RunStore] = []
    yield stores
    for store in stores:
        holder = _lock_holder(store.runs_dir)
        if holder:
            os.kill(holder, signal.SIGKILL)
        for rec in store.list_runs(statuses=["starting", "running"]):
            for pid in (rec.supervisor_pid, rec.pid):
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def _lock_holder(runs_dir: Path) -> int | None:
    """The pid of the scheduler of ``runs_dir`` (from its command line), if one runs."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "mdtui.scheduling.scheduler" in cmd and str(runs_dir) in cmd:
            return proc.pid
    return None


def _drain(store: RunStore, timeout: float = 20.0) -> None:
    """Wait until the queue is empty and the scheduler has exited."""
    wait_for(
        lambda: not scheduler.has_work(store) and not scheduler.scheduler_running(store.runs_dir), timeout
    )


def _launch_count(rec) -> int:
    text = (rec.run_dir / "stderr.log").read_text() if (rec.run_dir / "stderr.log").exists() else ""
    return sum(
        1
        for line in text.splitlines()
        if line.startswith("[mdtui.execution.supervise]") and " starting " in line
    )


@pytest.mark.slow
def test_n_runs_on_m_gpus_never_share_a_device_and_all_complete(tmp_path: Path, fake_gpus, live) -> None:
    plan, store = make_project(tmp_path)
    live.append(store)
    records = scheduler.enqueue(store, plan, ["multi"])  # 5 runs on 2 GPUs
    assert scheduler.ensure_scheduler(store.runs_dir, plan.settings.path)
    _drain(store)
    runs = [store.get(r.run_id) for r in records]
    assert [r.status for r in runs] == ["completed"] * 5
    assert all(len(r.devices) == 1 for r in runs) and {r.devices[0] for r in runs} == {"0", "1"}
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if a.devices == b.devices:
                assert a.ended_t <= b.started_t or b.ended_t <= a.started_t, (a, b)
    for rec in runs:  # the engine saw exactly the device it was given, by UUID
        uuid = f"GPU-fake-{int(rec.devices[0]):04d}"
        assert f"CUDA_VISIBLE_DEVICES='{uuid}'" in (rec.run_dir / "stderr.log").read_text()
        assert _launch_count(rec) == 1


@pytest.mark.slow
def test_a_foreign_process_filling_a_gpu_keeps_runs_off_it(tmp_path: Path, fake_gpus, live) -> None:
    fake_gpus([{"processes": [{"pid": 4242, "owner": "alice", "memory_mb": 24000}]}, {}])
    plan, store = make_project(tmp_path)
    live.append(store)
    records = scheduler.enqueue(store, plan, ["tiny"]) + scheduler.enqueue(store, plan, ["tiny"])
    scheduler.ensure_scheduler(store.runs_dir, plan.settings.path)
    _drain(store)
    assert [store.get(r.run_id).devices for r in records] == [["1"], ["1"]]
    assert all(store.get(r.run_id).status == "completed" for r in records)


@pytest.mark.slow
def test_from_chain_runs_in_order_and_a_failing_upstream_blocks(
    tmp_path: Path, fake_gpus, live, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, store = make_project(tmp_path)
    live.append(store)
    monkeypatch.setenv("FAKE_FAIL_AT", "0")  # every run fails: only the upstream ever starts
    tiny, focal, ft = scheduler.enqueue(store, plan, ["tiny-ft"])
    scheduler.ensure_scheduler(store.runs_dir, plan.settings.path)
    _drain(store)
    assert store.get(tiny.run_id).status == "failed"
    assert [store.get(r.run_id).status for r in (focal, ft)] == ["blocked", "blocked"]
    assert "upstream tiny failed" in store.get(focal.run_id).error
    assert "tiny-focal is blocked" in store.get(ft.run_id).error
    monkeypatch.delenv("FAKE_FAIL_AT")
    retry = scheduler.enqueue(store, plan, ["tiny"])[0]
    scheduler.ensure_scheduler(store.runs_dir, plan.settings.path)
    _drain(store)
    chain = [store.get(r.run_id) for r in (retry, focal, ft)]
    assert [r.status for r in chain] == ["completed"] * 3
    assert chain[0].ended_t <= chain[1].started_t and chain[1].ended_t <= chain[2].started_t
    config = json.loads((ft.run_dir / "config.json").read_text())
    assert config["init_checkpoint"] == str(focal.run_dir / "checkpoints" / "best.pt")


@pytest.mark.slow
def test_killing_the_scheduler_loses_nothing_and_launches_nothing_twice(
    tmp_path: Path, fake_gpus, live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.4")
    plan, store = make_project(tmp_path)
    live.append(store)
    records = scheduler.enqueue(store, plan, ["multi"])
    pid = scheduler.ensure_scheduler(store.runs_dir, plan.settings.path)
    wait_for(lambda: len(store.list_runs(statuses=["running"])) == 2)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not scheduler.scheduler_running(store.runs_dir))
    # the running runs carry on without it; the queue just waits
    wait_for(lambda: len(store.list_runs(statuses=["completed"])) == 2)
    assert len(store.list_runs(statuses=["queued"])) == 3
    from typer.testing import CliRunner

    from mdtui.cli import app

    # any queue command restarts it
    assert CliRunner().invoke(app, ["-f", str(plan.settings.path), "queue"]).exit_code == 0
    _drain(store)
    runs = [store.get(r.run_id) for r in records]
    assert [r.status for r in runs] == ["completed"] * 5
    assert [_launch_count(r) for r in runs] == [1] * 5


@pytest.mark.slow
def test_two_concurrent_queue_add_commands_both_land(tmp_path: Path, fake_gpus, live) -> None:
    plan, store = make_project(tmp_path)
    live.append(store)
    scheduler.pause(store)
    cmd = [sys.executable, "-m", "mdtui", "-f", str(plan.settings.path), "queue", "add"]
    procs = [
        subprocess.Popen([*cmd, name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name in ("tiny", "multi")
    ]
    outputs = [p.communicate(timeout=30)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    entries = scheduler.queue_entries(store)
    assert not scheduler.scheduler_running(store.runs_dir)  # paused: no scheduler was started
    assert sorted(e.experiment for e in entries) == ["multi"] * 5 + ["tiny"]
    assert sorted(e.position for e in entries) == [1, 2, 3, 4, 5, 6]
    assert len({e.run_id for e in entries}) == 6


# A front end (the TUI, `queue add`, `queue resume`) that dies the moment a write is done, before it
# returns: the write named `module[:Class].function` is patched to kill its caller right after it.
DIES_AFTER_ITS_WRITE = """
import importlib, os, sys
from mdtui import actions
from mdtui.execution.backends import launcher_for
from mdtui.registry.plan import load_plan
from mdtui.runs.store import RunStore
from mdtui.scheduling import scheduler

verb, (where, name) = sys.argv[2], sys.argv[3].rsplit(".", 1)
module, _, cls = where.partition(":")
owner = importlib.import_module(module)
owner = getattr(owner, cls) if cls else owner
written = getattr(owner, name)
def write_then_die(*args, **kwargs):
    written(*args, **kwargs)
    os._exit(9)
setattr(owner, name, write_then_die)
plan = load_plan(sys.argv[1])
store = RunStore(plan.settings.runs_dir)
if verb == "add":
    actions.enqueue(launcher_for(store, plan), plan, ["tiny"])
else:
    scheduler.resume_and_start(store, plan.settings.path)
"""


def die_after(plan, verb: str, write: str) -> None:
    script = [sys.executable, "-c", DIES_AFTER_ITS_WRITE, str(plan.settings.path), verb, write]
    assert subprocess.run(script, timeout=60).returncode == 9


@pytest.mark.slow
@pytest.mark.parametrize(
    ("verb", "write"), [("add", "mdtui.scheduling.queue.add"), ("resume", "mdtui.scheduling.queue.set_state")]
)
def test_a_front_end_killed_as_it_queues_still_gets_its_run_started(
    tmp_path: Path, fake_gpus, live, verb: str, write: str
) -> None:
    """The scheduler is started before the queued row (or the unpause) is written, so no moment of a
    kill leaves a queued run that nothing will start ("write, then start the scheduler" had one: found
    by a kill -9 of the TUI)."""
    plan, store = make_project(tmp_path)
    live.append(store)
    if verb == "resume":
        scheduler.pause(store)
        scheduler.enqueue(store, plan, ["tiny"])
    die_after(plan, verb, write)
    (entry,) = scheduler.queue_entries(store)
    wait_for(lambda: store.get(entry.run_id).status == "completed", 30)
    _drain(store)


def test_a_queued_run_and_its_queue_entry_are_written_together(tmp_path: Path, fake_gpus, live) -> None:
    """Killed right after the run's index row is written: the run and its queue entry land together or
    not at all (they were two commits, and the kill -9 of the TUI once left a run shown `queued` that no
    entry would ever start)."""
    plan, store = make_project(tmp_path)
    live.append(store)
    die_after(plan, "add", "mdtui.runs.index:RunIndex._upsert")
    queued = {r.run_id for r in store.list_runs() if r.status == "queued"}
    assert queued == {e.run_id for e in scheduler.queue_entries(store)}


@pytest.mark.slow
def test_local_launcher_submits_polls_and_says_where(tmp_path: Path, fake_gpus, live) -> None:
    import socket

    plan, store = make_project(tmp_path)
    live.append(store)
    rec = store.create_run(plan.experiments["tiny"], {"epochs": 2}, seed=0, devices=[], status="queued")
    launcher = LocalLauncher(store)
    launcher.submit(rec.run_id, ["1"])
    assert launcher.where(rec.run_id) == (socket.gethostname(), ["1"])
    wait_for(lambda: launcher.poll(rec.run_id) == "completed")
    assert launcher.poll("no-such-run") == "lost"
    assert launcher.stop(rec.run_id) is False  # nothing left to stop
