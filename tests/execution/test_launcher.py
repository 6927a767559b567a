"""The launcher is the one way to start, stop, poll and resume a run (mdtui/execution/launcher.py).

The AST test keeps it that way; the process tests use real supervisors and the fake engine on fake
GPUs: a run whose supervisor was killed keeps its device while its engine lives, `mdtui stop`
reaches that engine, and `mdtui run --resume` refuses to start a second engine beside it.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, wait_for
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.execution import launcher as launcher_module
from mdtui.execution import ledger
from mdtui.execution.launcher import DEFAULT_STOP_GRACE, STOP_REQUEST, LocalLauncher, stop_grace
from mdtui.execution.reconcile import reconcile
from mdtui.registry.plan import load_plan
from mdtui.registry.spec import Settings
from mdtui.runs.store import RunStore
from mdtui.scheduling import queue as runqueue
from mdtui.scheduling import scheduler

SUPERVISE = "mdtui.execution.supervise"
ALLOWED = {"mdtui/execution/launcher.py", "mdtui/execution/supervise.py"}


def _violations(path: Path) -> list[str]:
    """Calls of supervise.launch / supervise.stop (however imported) and spawns of the supervisor."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = {SUPERVISE}  # names bound to the supervise module
    direct = set()  # names bound to its launch / stop
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "mdtui.execution":
            aliases |= {a.asname or a.name for a in node.names if a.name == "supervise"}
        elif isinstance(node, ast.ImportFrom) and node.module == SUPERVISE:
            direct |= {a.asname or a.name for a in node.names if a.name in ("launch", "stop")}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name == SUPERVISE and a.asname}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in direct:
                found.append(f"{func.id}()")
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in ("launch", "stop")
                and ast.unparse(func.value) in aliases
            ):
                found.append(f"{ast.unparse(func)}()")
        # `python -m mdtui.execution.supervise RUN_DIR` spelled anywhere else starts a supervisor
        if isinstance(node, ast.Constant) and node.value == SUPERVISE:
            found.append(f"{SUPERVISE!r} literal")
    return found


def test_only_the_launcher_starts_or_stops_supervisors() -> None:
    files = sorted((REPO / "mdtui").rglob("*.py"))
    bad = [
        f"{p.relative_to(REPO)}: {v}"
        for p in files
        if str(p.relative_to(REPO)) not in ALLOWED
        for v in _violations(p)
    ]
    assert bad == []
    # the check itself sees the launcher's own calls (it would not pass vacuously)
    assert any("launch()" in v for v in _violations(REPO / "mdtui/execution/launcher.py"))


def test_the_ast_check_catches_each_way_of_reaching_the_supervisor(tmp_path: Path) -> None:
    sample = tmp_path / "probe.py"
    sample.write_text(
        "from mdtui.execution import supervise as sv\n"
        "from mdtui.execution.supervise import stop as halt\n"
        "import subprocess\n"
        "sv.launch(None, 'r', devices=[])\nhalt(None, 'r')\n"
        "subprocess.Popen(['python', '-m', 'mdtui.execution.supervise', 'x'])\n"
    )
    assert len(_violations(sample)) == 3


def test_the_stop_grace_has_one_default_and_follows_settings(tiny_plan) -> None:
    default = next(
        f.default for f in Settings.__dataclass_fields__.values() if f.name == "stop_grace_seconds"
    )
    assert DEFAULT_STOP_GRACE == default == stop_grace(None)
    assert stop_grace(tiny_plan.settings) == 10.0  # TINY_TOML sets stop_grace_seconds = 10
    launcher = LocalLauncher.for_plan(RunStore(tiny_plan.settings.runs_dir), tiny_plan)
    assert launcher.grace == 10.0


# --------------------------------------------------------------------------------------- processes


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch, fake_engine: str) -> None:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", "1")


def _invoke(toml: Path, *args: str):
    return CliRunner().invoke(app, ["-f", str(toml), *args])


@pytest.mark.slow
def test_queue_cancel_of_a_launched_run_uses_the_settings_grace(
    tiny_toml: Path, one_gpu: None, monkeypatch: pytest.MonkeyPatch, reap: list[int]
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "5")
    plan = load_plan(tiny_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=tiny_toml)
    rec = scheduler.enqueue(store, plan, ["tiny"])[0]
    assert runqueue.claim(store, rec.run_id, ["0"])  # what the scheduler does, then it launches
    LocalLauncher.for_plan(store, plan).submit(rec.run_id, ["0"])
    running = wait_for(lambda: (r := store.get(rec.run_id)).status == "running" and r.pid and r)
    reap.append(running.pgid)
    result = _invoke(tiny_toml, "queue", "cancel", rec.run_id)
    assert result.exit_code == 0 and "stopping" in result.output, result.output
    request = json.loads((rec.run_dir / STOP_REQUEST).read_text())
    assert request["grace"] == 10.0  # [settings] stop_grace_seconds, not a default written elsewhere
    wait_for(lambda: store.get(rec.run_id).status == "stopped")


def _orphan(tiny_toml: Path, monkeypatch: pytest.MonkeyPatch, reap: list[int]):
    """A run on GPU 0 whose supervisor was SIGKILLed while its engine (deaf to SIGTERM) lives on."""
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "5")
    monkeypatch.setenv("FAKE_IGNORE_TERM", "1")  # survives even a parent-death SIGTERM
    plan = load_plan(tiny_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=tiny_toml)
    launcher = LocalLauncher.for_plan(store, plan)
    rec = launcher.start_new(plan, plan.experiments["tiny"], seed=0)
    supervisor = rec.supervisor_pid
    running = wait_for(lambda: (r := store.get(rec.run_id)).status == "running" and r.pid and r)
    reap.append(running.pgid)
    # the engine is deaf to SIGTERM only once it has set that up (before its first event); killing the
    # supervisor earlier lets the parent-death SIGTERM end it, as it should
    events = rec.run_dir / "events.jsonl"
    wait_for(lambda: events.exists() and events.stat().st_size > 0)
    os.kill(supervisor, signal.SIGKILL)
    assert launcher.wait(rec.run_id, timeout=10)
    reconcile(store)
    lost = store.get(rec.run_id)
    assert lost.status == "lost" and ledger.engine_alive(lost)
    return plan, store, launcher, lost


@pytest.mark.slow
def test_a_lost_run_keeps_its_device_while_its_engine_lives_and_stop_reaches_it(
    tiny_toml: Path, one_gpu: None, monkeypatch: pytest.MonkeyPatch, reap: list[int]
) -> None:
    plan, store, launcher, lost = _orphan(tiny_toml, monkeypatch, reap)
    assert [r.run_id for r in ledger.reservations(store)] == [lost.run_id]
    # the only GPU is still taken: a new run must not be placed on it
    refused = _invoke(tiny_toml, "run", "tiny", "--detach")
    assert refused.exit_code == 1 and "no free device" in refused.output, refused.output
    assert len(store.list_runs()) == 1  # nothing was created for the refused launch

    stopped = _invoke(tiny_toml, "stop", lost.run_id, "--grace", "0.5")
    assert stopped.exit_code == 0, stopped.output
    assert f"pid {lost.pid}" in stopped.output
    wait_for(lambda: not ledger.engine_alive(lost), timeout=10)
    assert ledger.reservations(store) == []


@pytest.mark.slow
def test_resume_refuses_while_the_old_engine_is_alive(
    tiny_toml: Path, one_gpu: None, monkeypatch: pytest.MonkeyPatch, reap: list[int]
) -> None:
    plan, store, launcher, lost = _orphan(tiny_toml, monkeypatch, reap)
    (lost.run_dir / "checkpoints" / "last.pt").write_text(json.dumps({"epoch": 0}))
    result = _invoke(tiny_toml, "run", "--resume", lost.run_id)
    assert result.exit_code == 2, result.output
    assert f"pid {lost.pid}" in result.output and f"mdtui stop {lost.run_id}" in result.output
    assert "Traceback" not in result.output
    assert store.get(lost.run_id).status == "lost"  # nothing was started
    assert not (lost.run_dir / "exit.json.prev").exists()
    assert launcher.kill(lost.run_id)
    wait_for(lambda: not ledger.engine_alive(lost), timeout=10)
    # with the engine gone, the same resume goes ahead
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.05")
    monkeypatch.delenv("FAKE_IGNORE_TERM")
    resumed = _invoke(tiny_toml, "run", "--resume", lost.run_id)
    assert resumed.exit_code == 0, resumed.output
    assert store.get(lost.run_id).status == "completed"


@pytest.mark.slow
def test_explicit_device_taken_by_a_live_run_is_refused_not_shared(
    tiny_toml: Path, one_gpu: None, monkeypatch: pytest.MonkeyPatch, reap: list[int]
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "5")
    first = _invoke(tiny_toml, "run", "tiny", "--detach", "--device", "0", "--json")
    assert first.exit_code == 0, first.output
    run = json.loads(first.stdout)[0]
    store = RunStore(tiny_toml.parent / "runs")
    rec = wait_for(lambda: (r := store.get(run["run_id"])).pid and r)
    reap.append(rec.pgid)
    second = _invoke(tiny_toml, "run", "tiny", "--detach", "--device", "0")
    assert second.exit_code == 1, second.output
    assert f"reserved by mdtui run {run['run_id']}" in second.output
    assert "mdtui queue add" in second.output
    assert LocalLauncher.for_plan(store, load_plan(tiny_toml)).kill(run["run_id"])


# --------------------------------------------------------------------------------------- atomic placement


class RecordingLauncher:
    """Starts nothing; remembers what the scheduler handed it."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.submitted: list[tuple[str, list[str]]] = []

    def configure(self, settings: object) -> None:  # the scheduler hands every launcher [settings]
        self.settings = settings

    def submit(self, run_id: str, devices: list[str]) -> None:
        self.submitted.append((run_id, list(devices)))

    def poll(self, run_id: str) -> str:
        return self.store.get(run_id).status

    def stop(self, run_id: str, *, wait: bool = False) -> bool:
        return False

    def kill(self, run_id: str) -> bool:
        return False

    def where(self, run_id: str) -> tuple[str, list[str]]:
        return "here", []


@pytest.mark.slow
def test_pick_and_reserve_is_one_step_against_the_cli_and_the_scheduler(
    tiny_toml: Path, one_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one launch is between picking device 0 and marking its run `starting` (creating the run
    directory is made slow here), a second launch and a scheduler pass both find device 0 taken."""
    plan = load_plan(tiny_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=tiny_toml)
    inside, release = threading.Event(), threading.Event()
    real_create = launcher_module.create_run_for

    def slow_create(*args, **kwargs):
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(10)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(launcher_module, "create_run_for", slow_create)
    first: list = []
    thread = threading.Thread(
        name="first",
        target=lambda: first.append(
            LocalLauncher.for_plan(store, plan).start_new(plan, plan.experiments["tiny"], seed=0)
        ),
    )
    thread.start()
    assert inside.wait(10)
    queued = scheduler.enqueue(store, plan, ["tiny"])[0]
    recording = RecordingLauncher(store)
    sched = scheduler.Scheduler(store, tiny_toml, recording)
    outcomes: list[str] = []

    def second_launch() -> None:
        try:
            LocalLauncher.for_plan(store, plan).start_new(plan, plan.experiments["tiny"], seed=1)
            outcomes.append("started")
        except launcher_module.NoDevice as exc:
            outcomes.append(str(exc))

    others = [threading.Thread(target=second_launch), threading.Thread(target=sched.step)]
    for t in others:
        t.start()
    # a negative cannot be polled for: give both every chance to (wrongly) get past the lock
    time.sleep(0.3)
    assert outcomes == [] and recording.submitted == []  # both wait on the ledger lock
    release.set()
    for t in (thread, *others):
        t.join(20)
    rec = first[0]
    assert store.get(rec.run_id).devices == ["0"]
    assert len(outcomes) == 1 and "no free device" in outcomes[0]
    assert recording.submitted == [] and store.get(queued.run_id).status == "queued"
    assert LocalLauncher.for_plan(store, plan).wait(rec.run_id, timeout=30)


@pytest.mark.slow
def test_the_tui_stop_reaches_a_lost_runs_engine_too(
    tiny_toml: Path, one_gpu: None, monkeypatch: pytest.MonkeyPatch, reap: list[int]
) -> None:
    from mdtui.views.dashboard import Dashboard

    plan, store, launcher, lost = _orphan(tiny_toml, monkeypatch, reap)
    assert Dashboard(tiny_toml).stop([lost.run_id], kill=True) == []
    wait_for(lambda: not ledger.engine_alive(lost), timeout=10)
    assert ledger.reservations(store) == []


def test_an_engine_group_of_unreaped_zombies_holds_no_device() -> None:
    """An engine that exited but is not reaped yet still answers killpg(pgid, 0); it uses no device,
    so its run must not keep the device (nor make `--resume` refuse) until somebody reaps it."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from mdtui.system.processes import boot_id, process_start_time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"], start_new_session=True)
    try:
        started = process_start_time(child.pid)
        rec = SimpleNamespace(pid=child.pid, pgid=child.pid, proc_start=started, boot_id=boot_id())
        assert ledger.engine_alive(rec)
        # not waited for: the child stays a zombie, and its process group still exists
        wait_for(lambda: process_start_time(child.pid) is None, timeout=10)
        os.killpg(child.pid, 0)  # the group is still there ...
        assert not ledger.engine_alive(rec)  # ... but nothing in it is alive
    finally:
        child.wait()
