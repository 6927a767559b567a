"""Runs of several processes from the manager's side (mdtui/execution/ranks.py, supervise.py, ledger.py).

A run with ``distributed = { processes = 2 }`` (or two GPUs) is started by its supervisor through
torchrun. The unit tests pin the command, the process count, the thread split and how a failing
rank is named; the slow tests start real torchrun processes running tests/fixtures/fake_ranks.py
(the DDP contract without torch in the ranks): a completed run, a stop that reaches every rank, a
failing and a killed rank named in the reason, ranks left by a killed torchrun ended by the
supervisor, and a lost run whose rank outlives torchrun keeping its devices. The last test trains
the real engine with 2 gloo ranks when it runs under torchrun.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, TINY_TOML, wait_for
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.execution import ledger, ranks, supervise
from mdtui.execution.ending import EngineEnd, decide
from mdtui.execution.launcher import LaunchRefused, LocalLauncher
from mdtui.execution.reconcile import reconcile
from mdtui.registry.plan import load_plan
from mdtui.runs.prepare import create_run_for
from mdtui.runs.store import RunStore
from mdtui.system.processes import process_start_time
from mdtui.views.dashboard import Dashboard

FAKE_RANKS = REPO / "tests" / "fixtures" / "fake_ranks.py"
DDP_TOML = (
    TINY_TOML
    + '\n[experiment.ddp]\ngroup = "demo"\nloss = "ce"\ndistributed = { processes = 2 }\n'
    # the real engine runs until stopped
    + '\n[experiment.ddp-long]\ngroup = "demo"\nloss = "ce"\nepochs = 200\ndistributed = { processes = 2 }\n'
)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]


# --------------------------------------------------------------------------- the command and the count


def test_several_processes_start_through_torchrun(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)
    run_dir = tmp_path / "run"
    assert supervise.engine_command(run_dir, processes=2) == [*TORCHRUN, "2", "-m", "engine", str(run_dir)]
    assert supervise.engine_command(run_dir, resume=True, processes=4) == [
        *TORCHRUN, "4", "-m", "engine", str(run_dir), "--resume",
    ]  # fmt: skip
    # one process: the engine itself, as always
    assert supervise.engine_command(run_dir) == [sys.executable, "-m", "engine", str(run_dir)]


def test_an_engine_override_runs_its_program_in_every_rank(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MDTUI_ENGINE_CMD", f"python3 {FAKE_RANKS}")
    run_dir = tmp_path / "run"
    assert supervise.engine_command(run_dir, processes=2) == [*TORCHRUN, "2", str(FAKE_RANKS), str(run_dir)]
    assert supervise.engine_command(run_dir) == ["python3", str(FAKE_RANKS), str(run_dir)]


@pytest.mark.parametrize(
    ("config", "devices", "expected"),
    [
        ({}, ["cpu"], 1),
        ({"distributed": {"processes": 0}}, ["cpu"], 1),  # 0 on the CPU means 1
        ({"distributed": {"processes": 2}}, ["cpu"], 2),
        ({"distributed": {"processes": 0}}, ["0", "1"], 2),  # one per GPU given
        ({}, ["3"], 1),
        ({"distributed": {"processes": 1}}, ["0", "1"], 1),  # asked for explicitly
        ({"distributed": None}, ["0", "1", "2"], 3),
    ],
)
def test_process_count_follows_the_contract(config, devices, expected) -> None:
    assert ranks.process_count(config, devices) == expected


def test_cpu_threads_are_split_between_ranks_and_runs(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert supervise.cpu_threads_env(["cpu"], 1, 2) == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}
    assert supervise.cpu_threads_env(["cpu"], 2, 2)["OMP_NUM_THREADS"] == "4"
    assert supervise.cpu_threads_env(["cpu"], 32, 2)["OMP_NUM_THREADS"] == "1"
    assert supervise.cpu_threads_env(["cpu"], 1, 1) == {}  # alone on the CPU: torch's default
    assert supervise.cpu_threads_env(["0", "1"], 1, 2) == {}  # GPU ranks: not ours to split


def test_devices_label_shows_the_process_count() -> None:
    assert ranks.devices_label(["cpu"], 2) == "cpu ×2"
    assert ranks.devices_label(["cpu"], 1) == "cpu"
    assert ranks.devices_label(["0", "1"], 2) == "0,1"  # one rank per device: the list says it
    assert ranks.devices_label(["0"], 2) == "0 ×2"


def test_status_and_the_dashboard_show_a_run_s_processes(ddp_plan, ddp_store) -> None:
    ddp = create_run_for(ddp_plan, ddp_store, ddp_plan.experiments["ddp"], seed=0, devices=["cpu"])
    one = create_run_for(ddp_plan, ddp_store, ddp_plan.experiments["tiny"], seed=0, devices=["cpu"])
    ddp_store.update(ddp.run_id, status="running")
    result = CliRunner().invoke(app, ["-f", str(ddp_plan.settings.path), "status"], catch_exceptions=False)
    lines = {ln.split()[0]: ln for ln in result.output.splitlines() if ln.strip()}
    assert "cpu ×2" in lines[ddp.run_id] and "×" not in lines[one.run_id]
    rows = {row.run_id: row for row in Dashboard(ddp_plan.settings.path).refresh(with_devices=False).runs}
    assert rows[ddp.run_id].devices == "cpu ×2" and rows[one.run_id].devices == "cpu"


async def test_the_tui_run_table_shows_a_run_s_processes(ddp_plan, ddp_store) -> None:
    from mdtui.tui.app import MdtuiApp
    from mdtui.tui.widgets.run_table import RunTable

    ddp = create_run_for(ddp_plan, ddp_store, ddp_plan.experiments["ddp"], seed=0, devices=["cpu"])
    ddp_store.update(ddp.run_id, status="stopped")
    app = MdtuiApp(ddp_plan.settings.path)
    async with app.run_test(size=(120, 30)) as pilot:
        deadline = time.monotonic() + 15
        while not app.snapshot.runs and time.monotonic() < deadline:
            await pilot.pause(0.05)
        table = app.screen.query_one(RunTable)
        while table.row_count == 0 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert " cpu ×2" in [str(cell) for cell in table.get_row_at(0)]  # what the screen shows


# --------------------------------------------------------------------------- naming the failing rank

SUMMARY = """\
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
engine FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-01_20:01:04
  host      : localhost
  rank      : {other} (local_rank: {other})
  exitcode  : {other_code} (pid: 4746)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 4746
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_20:01:04
  host      : localhost
  rank      : {root} (local_rank: {root})
  exitcode  : {code} (pid: 4747)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def _write_failure(
    run_dir: Path, *, root: int = 1, code: int = 1, other: int = 0, other_code: int = -15, rank0: str = ""
) -> None:
    """stderr.log as torchrun leaves it: the root cause, and another failure (by default rank 0,
    stopped with SIGTERM by torchrun); stderr.rank1.log with an earlier attempt's line first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    old = "an earlier attempt's lines\n"
    (run_dir / "stderr.log").write_text(
        old
        + "[mdtui.execution.supervise] 2026-12-01 20:01:00 starting torchrun\n"
        + "W1201 20:01:04.864000 4601 site-packages/torch/distributed/elastic/api.py:1028] Sending SIGTERM\n"
        + rank0
        + SUMMARY.format(root=root, code=code, other=other, other_code=other_code)
    )
    (run_dir / "stderr.rank1.log").write_text(
        "old RuntimeError of an earlier attempt\nTraceback (most recent call last):\n"
        '  File "engine/train.py", line 9, in step\nRuntimeError: out of memory on rank 1\n'
    )


def test_the_reason_names_the_failing_rank_and_its_error(tmp_path) -> None:
    _write_failure(tmp_path)
    offsets = {1: len("old RuntimeError of an earlier attempt\n")}
    reason = ranks.failure_reason(tmp_path, len("an earlier attempt's lines\n"), offsets)
    assert reason == (
        "rank 1 failed (exit code 1): Traceback (most recent call last): | "
        '  File "engine/train.py", line 9, in step | RuntimeError: out of memory on rank 1'
    )


def test_a_rank_killed_by_a_signal_is_the_cause_whatever_torchrun_calls_the_root(tmp_path) -> None:
    # rank 1 was SIGKILLed; rank 0's collective broke in the same second and torchrun (whose
    # failure times have a resolution of a second) names rank 0 the root cause
    _write_failure(tmp_path, root=0, code=1, other=1, other_code=-9)
    found = ranks.parse_failures(ranks.read_from(tmp_path / "stderr.log", 0))
    assert [(f.rank, f.exit_code, f.root) for f in found] == [(1, -9, False), (0, 1, True)]
    written = ranks.log_sizes(tmp_path)  # rank 1 wrote nothing in this attempt
    reason = ranks.failure_reason(tmp_path, 0, written)
    assert reason == "rank 1 was killed by SIGKILL (not sent by mdtui)"


def test_rank_zero_failing_shows_its_own_lines_not_torchrun_s(tmp_path) -> None:
    rank0 = "Traceback (most recent call last):\nValueError: bad batch on rank 0\n"
    _write_failure(tmp_path, root=0, code=1, other=1, other_code=-15, rank0=rank0)
    reason = ranks.failure_reason(tmp_path, len("an earlier attempt's lines\n"))
    assert (
        reason
        == "rank 0 failed (exit code 1): Traceback (most recent call last): | ValueError: bad batch on rank 0"
    )


def test_no_torchrun_report_no_rank_reason(tmp_path) -> None:
    (tmp_path / "stderr.log").write_text("Traceback (most recent call last):\nKeyError: 'x'\n")
    assert ranks.failure_reason(tmp_path) is None


def test_the_rank_error_comes_before_rank_zero_s_symptom() -> None:
    end = EngineEnd(
        event_status="failed",
        event_error="RuntimeError: [gloo] Connection closed by peer",
        exit_code=1,
        rank_error="rank 1 was killed by SIGKILL (not sent by mdtui)",
    )
    assert decide(end).error == "rank 1 was killed by SIGKILL (not sent by mdtui)"
    asked = EngineEnd(exit_code=1, stop_requested=True, rank_error="rank 1 failed (exit code 1)")
    assert decide(asked).status == "stopped"  # a stop mdtui asked for stays a stop


# --------------------------------------------------------------------------- real torchrun, fake ranks


@pytest.fixture
def ddp_plan(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(DDP_TOML, encoding="utf-8")
    return load_plan(path)


@pytest.fixture
def ddp_store(ddp_plan):
    return RunStore(ddp_plan.settings.runs_dir, experiments_file=ddp_plan.settings.path)


@pytest.fixture
def fake_ranks(monkeypatch) -> None:
    """Every supervisor runs torchrun over tests/fixtures/fake_ranks.py; no rank ignores SIGTERM."""
    monkeypatch.setenv("MDTUI_ENGINE_CMD", f"{sys.executable} {FAKE_RANKS}")
    monkeypatch.delenv("FAKE_IGNORE_TERM", raising=False)
    monkeypatch.delenv("FAKE_FAIL_RANK", raising=False)


def _start(plan, store, grace: float | None = None, **env: str):
    """Start the `ddp` experiment on the CPU; ``env`` reaches its supervisor, torchrun and the ranks."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        launcher = LocalLauncher.for_plan(store, plan)
        launcher.grace = launcher.grace if grace is None else grace
        rec = launcher.start_new(plan, plan.experiments["ddp"], seed=0, devices=["cpu"])
        return rec, rec.supervisor_pid
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _rank_facts(run_dir: Path, count: int = 2) -> list[dict]:
    """Each rank's {"pid", "omp"}, once every rank has written it."""
    paths = [run_dir / f"rank{k}.json" for k in range(count)]
    wait_for(lambda: all(p.is_file() and p.read_text() for p in paths), timeout=60)
    return [json.loads(p.read_text()) for p in paths]


def _recorded(run_dir: Path, count: int = 2) -> list[ranks.RankProcess]:
    """The ranks the supervisor recorded in run.json, once all ``count`` are there and named."""

    def named() -> list[ranks.RankProcess]:
        found = ranks.recorded_ranks(run_dir)
        return found if len(found) == count and all(r.rank is not None for r in found) else []

    return wait_for(named, 60)


def _gone(pid: int) -> bool:
    return process_start_time(pid) is None


# --------------------------------------------------------------------------- recording the ranks

HELPER = ranks.RankProcess(None, 900, 10.0)  # torchrun's `ldconfig -p` (import torch): no RANK
RANK0_UNNAMED = ranks.RankProcess(None, 901, 11.0)  # rank 0 between its fork and its exec
RANK0, RANK1 = ranks.RankProcess(0, 901, 11.0), ranks.RankProcess(1, 902, 11.0)


def test_an_unnamed_child_torchrun_no_longer_has_is_no_rank() -> None:
    assert ranks.merge_sightings([], [HELPER, RANK0_UNNAMED]) == [HELPER, RANK0_UNNAMED]
    # the helper exited; rank 0 was exec'd (same pid and start): named now
    assert ranks.merge_sightings([HELPER, RANK0_UNNAMED], [RANK0, RANK1]) == [RANK0, RANK1]
    # a named rank stays recorded when torchrun no longer lists it, and is never un-named
    assert ranks.merge_sightings([RANK0, RANK1], [RANK0_UNNAMED]) == [RANK0, RANK1]


def test_the_supervisor_records_only_the_ranks_of_torchrun(ddp_plan, ddp_store, monkeypatch) -> None:
    # CI: a look during torchrun's start-up caught the short-lived `ldconfig -p` that importing torch
    # runs; it stayed in run.json as a third, unnamed rank for the whole attempt
    rec = create_run_for(ddp_plan, ddp_store, ddp_plan.experiments["ddp"], seed=0, devices=["cpu"])
    watcher = supervise.Supervisor(Path(rec.run_dir))
    watcher.proc = SimpleNamespace(pid=899, poll=lambda: None)  # torchrun, still running
    looks = iter([[HELPER], [HELPER, RANK0_UNNAMED], [RANK0, RANK1]])
    monkeypatch.setattr(ranks, "find_ranks", lambda pid: next(looks))
    for _ in range(3):
        watcher._track_ranks()
    assert ranks.recorded_ranks(Path(rec.run_dir)) == [RANK0, RANK1]


@pytest.mark.slow
def test_mdtui_run_on_the_cpu_runs_two_ranks_under_torchrun(
    ddp_plan, ddp_store, fake_ranks, monkeypatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    args = ["-f", str(ddp_plan.settings.path), "run", "ddp", "--device", "cpu"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)  # in the foreground, to its end
    assert result.exit_code == 0, result.output
    (final,) = ddp_store.list_runs()
    assert f"completed ddp run {final.run_id}" in result.output
    run_dir = Path(final.run_dir)
    facts = _rank_facts(run_dir)
    assert final.status == "completed", final.error
    assert final.best_acc1 == 70.0 and final.epochs_done == 3  # rank 0's events, as one process
    info = json.loads((run_dir / "run.json").read_text())
    assert info["command"][:6] == [*TORCHRUN, "2"] and info["processes"] == 2
    assert sorted(r["rank"] for r in info["ranks"]) == [0, 1]  # named, though seen before their exec
    assert {r["pid"] for r in info["ranks"]} == {f["pid"] for f in facts}
    assert [f["omp"] for f in facts] == ["4", "4"]  # 8 cores between 2 ranks, not torchrun's 1
    assert "rank 1 of 2 started" in (run_dir / "stderr.rank1.log").read_text()
    assert all(_gone(f["pid"]) for f in facts)


@pytest.mark.slow
def test_a_two_gpu_run_books_both_and_starts_a_rank_on_them(
    ddp_plan, ddp_store, fake_ranks, monkeypatch
) -> None:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", "4")
    exp = dataclasses.replace(ddp_plan.experiments["tiny"], gpus=2)  # `gpus = 2`, no distributed block
    launcher = LocalLauncher.for_plan(ddp_store, ddp_plan)
    rec = launcher.start_new(ddp_plan, exp, seed=0)
    pid = rec.supervisor_pid
    assert len(rec.devices) == 2 and "cpu" not in rec.devices
    assert [r.devices for r in ledger.reservations(ddp_store)] == [tuple(rec.devices)]
    facts = _rank_facts(Path(rec.run_dir))
    assert supervise.wait_supervisor(pid, timeout=90)
    info = json.loads((Path(rec.run_dir) / "run.json").read_text())
    assert info["command"][:6] == [*TORCHRUN, "2"] and info["processes"] == 2
    visible = {f["cuda"] for f in facts}
    assert len(visible) == 1 and len(visible.pop().split(",")) == 2  # every rank sees both devices
    assert ddp_store.get(rec.run_id).status == "completed"


@pytest.mark.slow
def test_a_stop_reaches_every_rank_and_leaves_none(ddp_plan, ddp_store, fake_ranks) -> None:
    rec, pid = _start(ddp_plan, ddp_store, FAKE_EPOCH_SECONDS="6")
    facts = _rank_facts(Path(rec.run_dir))
    launcher = LocalLauncher.for_plan(ddp_store, ddp_plan)
    assert launcher.stop(rec.run_id, wait=True, grace=20)
    final = ddp_store.get(rec.run_id)
    assert final.status == "stopped" and final.error is None
    assert all(_gone(f["pid"]) for f in facts)
    assert (Path(rec.run_dir) / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_ranks_deaf_to_a_stop_are_killed_after_the_grace(ddp_plan, ddp_store, fake_ranks, reap) -> None:
    rec, pid = _start(ddp_plan, ddp_store, FAKE_EPOCH_SECONDS="60", FAKE_IGNORE_TERM="1", grace=1.0)
    run_dir = Path(rec.run_dir)
    reap.extend(r.pid for r in _recorded(run_dir))
    facts = _rank_facts(run_dir)  # the ranks ignore SIGTERM from here on
    assert LocalLauncher(ddp_store, grace=1.0).stop(rec.run_id)  # the supervisor escalates
    assert supervise.wait_supervisor(pid, timeout=60)
    final = ddp_store.get(rec.run_id)
    assert final.status == "stopped" and final.error == "killed (SIGKILL) after the stop grace period"
    assert all(_gone(f["pid"]) for f in facts)


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_with_its_error(ddp_plan, ddp_store, fake_ranks) -> None:
    rec, pid = _start(ddp_plan, ddp_store, FAKE_EPOCH_SECONDS="3", FAKE_FAIL_RANK="1")
    facts = _rank_facts(Path(rec.run_dir))
    assert supervise.wait_supervisor(pid, timeout=90)
    final = ddp_store.get(rec.run_id)
    assert final.status == "failed"
    assert final.error.startswith("rank 1 failed (exit code 1): ")  # then its traceback's last lines
    assert final.error.endswith("RuntimeError: fake failure on rank 1 in epoch 0")
    assert all(_gone(f["pid"]) for f in facts)


@pytest.mark.slow
def test_a_killed_rank_is_named_in_the_reason(ddp_plan, ddp_store, fake_ranks) -> None:
    rec, pid = _start(ddp_plan, ddp_store, FAKE_EPOCH_SECONDS="6")
    facts = _rank_facts(Path(rec.run_dir))
    os.kill(facts[1]["pid"], signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=90)
    final = ddp_store.get(rec.run_id)
    assert final.status == "failed"
    assert final.error.startswith("rank 1 was killed by SIGKILL (not sent by mdtui)"), final.error
    assert _gone(facts[0]["pid"])


@pytest.mark.slow
def test_ranks_left_by_a_killed_torchrun_are_ended_before_the_run_is(
    ddp_plan, ddp_store, fake_ranks, reap
) -> None:
    # ranks deaf to SIGTERM: the parent-death signal does not stop them, the supervisor must
    rec, pid = _start(ddp_plan, ddp_store, FAKE_EPOCH_SECONDS="60", FAKE_IGNORE_TERM="1", grace=1.0)
    run_dir = Path(rec.run_dir)
    reap.extend(r.pid for r in _recorded(run_dir))
    facts = _rank_facts(run_dir)  # the ranks ignore SIGTERM from here on
    torchrun = ddp_store.get(rec.run_id).pid
    os.kill(torchrun, signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=60)
    final = ddp_store.get(rec.run_id)
    assert final.status == "failed"
    assert final.error.startswith("the engine was killed by SIGKILL (not sent by mdtui)")
    assert all(_gone(f["pid"]) for f in facts)  # killed before exit.json, not after
    assert "SIGKILL to ranks 0 (pid" in (run_dir / "stderr.log").read_text()


@pytest.mark.slow
def test_a_lost_run_whose_rank_outlives_torchrun_keeps_its_devices(
    ddp_plan, ddp_store, fake_ranks, reap
) -> None:
    rec, pid = _start(ddp_plan, ddp_store, FAKE_EPOCH_SECONDS="60", FAKE_IGNORE_TERM="1")
    run_dir = Path(rec.run_dir)
    recorded = _recorded(run_dir)
    reap.extend(r.pid for r in recorded)
    _rank_facts(run_dir)  # the ranks ignore SIGTERM from here on
    torchrun = ddp_store.get(rec.run_id).pid
    os.kill(pid, signal.SIGKILL)  # the supervisor, then torchrun: the ranks (deaf to SIGTERM) remain
    assert supervise.wait_supervisor(pid, timeout=30)
    os.kill(torchrun, signal.SIGKILL)
    wait_for(lambda: _gone(torchrun), timeout=30)
    reconcile(ddp_store)
    lost = ddp_store.get(rec.run_id)
    assert lost.status == "lost" and "still running" in lost.error
    assert not (run_dir / "exit.json").exists()  # not final while a rank may still write
    assert ledger.engine_alive(lost)
    assert [r.run_id for r in ledger.reservations(ddp_store)] == [rec.run_id]
    with pytest.raises(LaunchRefused, match="still running"):
        LocalLauncher(ddp_store).resume(lost)
    # `mdtui stop` reaches ranks whose torchrun is gone (SIGKILL after the grace: they ignore SIGTERM)
    assert LocalLauncher(ddp_store).stop(rec.run_id, grace=1.0)
    wait_for(lambda: not ledger.engine_alive(lost), timeout=30)
    reconcile(ddp_store)
    assert ddp_store.get(rec.run_id).status == "stopped" and (run_dir / "exit.json").exists()
    assert ledger.reservations(ddp_store) == []


# --------------------------------------------------------------------------- the real engine, 2 gloo ranks


def _stepped(run_dir: Path, after: int = 0):
    """True once the engine has logged a step beyond the first ``after`` bytes of events.jsonl."""
    events = run_dir / "events.jsonl"
    return events.is_file() and '"type":"step"' in events.read_bytes()[after:].decode(errors="replace")


@pytest.mark.slow
def test_the_engine_s_ranks_stop_resume_and_fail_together(ddp_plan, ddp_store, monkeypatch, reap) -> None:
    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)
    launcher = LocalLauncher.for_plan(ddp_store, ddp_plan)
    rec = launcher.start_new(ddp_plan, ddp_plan.experiments["ddp-long"], seed=0, devices=["cpu"])
    pid = rec.supervisor_pid
    run_dir = Path(rec.run_dir)
    wait_for(lambda: _stepped(run_dir), timeout=180)
    first = _recorded(run_dir)
    reap.extend(r.pid for r in first)
    # a stop reaches both ranks (torchrun forwards it); rank 0 saves last.pt; no rank survives
    assert launcher.stop(rec.run_id, wait=True)
    stopped = ddp_store.get(rec.run_id)
    assert stopped.status == "stopped" and (run_dir / "checkpoints" / "last.pt").is_file()
    assert not any(ranks.group_alive(r.pid, r.start) for r in first)
    # resumed under torchrun again: --resume reaches every rank
    size = (run_dir / "events.jsonl").stat().st_size
    pid = launcher.resume(stopped).supervisor_pid
    wait_for(lambda: _stepped(run_dir, size), timeout=180)
    again = _recorded(run_dir)
    reap.extend(r.pid for r in again)
    assert json.loads((run_dir / "run.json").read_text())["command"][-1] == "--resume"
    # a rank killed from outside: the run fails naming it, and the other rank ends too
    os.kill(next(r.pid for r in again if r.rank == 1), signal.SIGKILL)
    assert supervise.wait_supervisor(pid, timeout=120)
    failed = ddp_store.get(rec.run_id)
    assert failed.status == "failed"
    assert failed.error.startswith("rank 1 was killed by SIGKILL (not sent by mdtui)")
    assert not any(ranks.group_alive(r.pid, r.start) for r in again)


def test_rank_zero_s_own_engine_error_wins_over_torchrun_s_banner(tmp_path) -> None:
    # rank 0 caught its error (run_finished{failed}) and printed nothing else: its stderr tail was
    # torchrun's OMP_NUM_THREADS banner, which became the run's reason (issue #19)
    banner = (
        "*****************************************\n"
        "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid "
        "your system being overloaded, please further tune the variable for optimal performance in "
        "your application as needed.\n"
        "*****************************************\n"
    )
    _write_failure(tmp_path, root=0, code=1, other=1, other_code=-15, rank0=banner)
    reason = ranks.failure_reason(tmp_path, 0, engine_error="ValueError: bad batch on rank 0")
    assert reason == "rank 0 failed (exit code 1): ValueError: bad batch on rank 0"
    # without the engine's word, the banner is still no reason
    assert "OMP_NUM_THREADS" not in (ranks.failure_reason(tmp_path, 0) or "")
