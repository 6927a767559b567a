"""Security properties (issue 8): safe checkpoint loading, run directories confined to runs_dir, no
shell anywhere in launching, signals only to processes mdtui started, escaped markdown in RESULTS.md."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from mdtui.execution import supervise
from mdtui.execution.reconcile import reconcile
from mdtui.registry.plan import Experiment
from mdtui.results.markdown import headings, md_unescape, one_line
from mdtui.runs.store import RunStore
from mdtui.system.fs import sanitize_name
from mdtui.system.processes import process_start_time

SOURCE_DIRS = (REPO / "engine", REPO / "mdtui")


def _python_files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py"))


def _calls(path: Path) -> list[tuple[ast.Call, str]]:
    """Every call in ``path`` with its dotted callee text (``torch.load``, ``subprocess.Popen``, ...)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node, ast.unparse(node.func)) for node in ast.walk(tree) if isinstance(node, ast.Call)]


# --------------------------------------------------------------------------- checkpoints


def test_every_torch_load_passes_weights_only_true() -> None:
    loads = []
    for path in _python_files(*SOURCE_DIRS, REPO / "benchmarks"):
        for call, name in _calls(path):
            if not name.endswith("torch.load"):
                continue
            loads.append(path)
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            assert isinstance(flag, ast.Constant) and flag.value is True, (
                f"{path.relative_to(REPO)}:{call.lineno}: torch.load without weights_only=True"
            )
    assert loads, "expected at least engine/checkpoint.py to load checkpoints"
    for path in _python_files(*SOURCE_DIRS):  # no aliasing around the check (`from torch import load`)
        assert not re.search(r"from torch import .*\bload\b|torch\.serialization\.load", path.read_text()), (
            path
        )


def test_no_unpickling_entry_points_in_the_code() -> None:
    banned = re.compile(r"^(pickle|cPickle|dill|joblib|marshal|shelve)\.(load|loads|Unpickler|open)$")
    for path in _python_files(*SOURCE_DIRS):
        for call, name in _calls(path):
            assert not banned.match(name), f"{path.relative_to(REPO)}:{call.lineno}: {name}"
            if name.endswith("np.load") or name.endswith("numpy.load"):
                flag = next((k.value for k in call.keywords if k.arg == "allow_pickle"), None)
                assert not (isinstance(flag, ast.Constant) and flag.value), (
                    f"{path}:{call.lineno}: allow_pickle"
                )


class _Exploit:
    """Pickles as a call to ``open(marker, "w")``: unpickling it without weights_only creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights

    marker = tmp_path / "pwned"
    path = tmp_path / "best.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Exploit(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "weights_only" in message
    with pytest.raises(CheckpointError):
        load_model_weights(torch.nn.Linear(2, 2), path)
    assert not marker.exists(), "the pickled call ran: the checkpoint was unpickled unsafely"


def test_a_planted_cifar_batch_cannot_run_code(tmp_path: Path) -> None:
    """CIFAR batches are pickles by format: they are read with an unpickler that allows NumPy arrays only."""
    import pickle

    import numpy as np

    from engine.data.base import DataError
    from engine.data.cifar import CIFAR10, read_batch

    good = tmp_path / "data_batch_1"
    good.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=2))
    images, labels = read_batch(good, CIFAR10)
    assert images.shape[0] == 2 and labels.tolist() == [0, 1]
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_2"
    evil.write_bytes(pickle.dumps({"data": _Exploit(marker), "labels": [0]}, protocol=2))
    with pytest.raises(DataError) as info:
        read_batch(evil, CIFAR10)
    assert str(evil) in str(info.value) and "refusing to load" in str(info.value)
    assert not marker.exists(), "a data file ran code while loading"


# --------------------------------------------------------------------------- run directories

HOSTILE = [
    "../../etc/passwd",
    "/abs/path",
    "a/../../b",
    "..",
    ".",
    "...",
    "",
    " ",
    "\x00",
    "a\x00/../b",
    "\n../x",
    "~root",
    "$HOME",
    "x" * 1000,
    "名前/../../x",
    "..\\..\\win",
    "run[a=../../b]",
    ".hidden",
]


def _experiment(name: str, group: str = "g", sweep: dict | None = None) -> Experiment:
    return Experiment(
        name=name,
        table=name,
        group=group,
        baseline=False,
        tags=(),
        description="",
        upstream=None,
        seeds=(0,),
        sweep_point=sweep or {},
        config={"epochs": 1},
        line=1,
    )


def _assert_inside(store: RunStore, run_dir: Path) -> None:
    resolved = Path(run_dir).resolve()
    assert resolved.parent.parent == store.runs_dir, f"{run_dir} is not runs/<experiment>/<run id>"
    assert resolved.parent.name not in ("", ".", "..")
    assert len(resolved.parent.name.encode()) <= 255


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_experiment_names_stay_inside_runs_dir(tmp_path: Path, name: str) -> None:
    store = RunStore(tmp_path / "runs")
    rec = store.create_run(_experiment(name), {"epochs": 1}, seed=0, devices=["cpu"])
    _assert_inside(store, rec.run_dir)
    assert (Path(rec.run_dir) / "config.json").is_file()
    assert store.get(rec.run_id).experiment == name  # the name itself is kept, only the directory is safe
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written beside runs_dir


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=300))
def test_sanitized_names_are_one_safe_path_component(name: str) -> None:
    cleaned = sanitize_name(name)
    assert cleaned and cleaned not in (".", "..") and not cleaned.startswith(".")
    assert "/" not in cleaned and "\\" not in cleaned and "\x00" not in cleaned and ".." not in cleaned
    assert len(cleaned.encode()) <= 255
    root = Path("/srv/runs")
    assert (root / cleaned).resolve().parent == root


# --------------------------------------------------------------------------- no shell


SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "pty.spawn"}
SPAWNERS = {
    "subprocess.Popen",
    "subprocess.run",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
}


def test_no_shell_is_ever_involved() -> None:
    for path in _python_files(*SOURCE_DIRS):
        where = path.relative_to(REPO)
        for call, name in _calls(path):
            assert name not in SHELL_CALLS, f"{where}:{call.lineno}: {name}"
            # One exec is allowed: the Slurm job step replaces itself with torchrun (an argv list
            # built by torchrun_command, no shell, no PATH search), so Slurm's signals reach torchrun.
            exec_allowed = name == "os.execv" and str(where) == "mdtui/execution/slurm_job.py"
            assert exec_allowed or not (name.startswith("os.exec") or name.startswith("os.spawn")), (
                f"{where}:{call.lineno}"
            )
            for kw in call.keywords:
                if kw.arg == "shell":
                    assert isinstance(kw.value, ast.Constant) and kw.value.value is False, (
                        f"{where}:{call.lineno}: shell=True"
                    )
            if name in SPAWNERS:
                first = call.args[0] if call.args else None
                is_text = isinstance(first, ast.JoinedStr) or (
                    isinstance(first, ast.Constant) and isinstance(first.value, str)
                )
                assert first is not None and not is_text, (
                    f"{where}:{call.lineno}: {name} with a command string"
                )


def test_engine_command_is_an_argument_vector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "a b;touch x$(id)"
    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)
    assert supervise.engine_command(run_dir, resume=True) == [
        sys.executable,
        "-m",
        "engine",
        str(run_dir),
        "--resume",
    ]
    monkeypatch.setenv("MDTUI_ENGINE_CMD", "python 'my engine.py' --flag")
    assert supervise.engine_command(run_dir) == ["python", "my engine.py", "--flag", str(run_dir)]


@pytest.mark.slow
def test_shell_metacharacters_in_paths_are_inert(tmp_path: Path, fake_engine: str) -> None:
    """A runs directory full of shell syntax launches fine and runs nothing it spells."""
    evil = tmp_path / "r;touch PWNED1;$(touch PWNED2)`touch PWNED3`|touch PWNED4&"
    store = RunStore(evil)
    exp = _experiment("x;touch PWNED5")
    rec = store.create_run(exp, {"epochs": 1, "run_id": "", "experiment": exp.name}, seed=0, devices=["cpu"])
    pid = supervise.launch(store, rec.run_id, devices=["cpu"])
    assert supervise.wait_supervisor(pid, timeout=30)
    assert store.get(rec.run_id).status == "completed"
    found = [p for p in tmp_path.rglob("PWNED*")] + [p for p in Path.cwd().glob("PWNED*")]
    assert not found, f"a shell ran: {found}"


# --------------------------------------------------------------------------- signals


@pytest.fixture
def bystander():
    """A process mdtui did not start (its own group), standing in for whoever reused a run's pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    wait_for(lambda: process_start_time(proc.pid))
    yield proc
    proc.kill()
    proc.wait()


def test_stop_never_signals_a_reused_pid(store, tiny_plan, bystander) -> None:
    rec = store.create_run(tiny_plan.experiments["tiny"], {"epochs": 1}, seed=0, devices=["cpu"])
    real_start = process_start_time(bystander.pid)
    # the record claims the bystander's pid as its engine AND its supervisor, with another start time
    store.update(
        rec.run_id,
        status="running",
        pid=bystander.pid,
        pgid=bystander.pid,
        proc_start=real_start - 100,
        supervisor_pid=bystander.pid,
        supervisor_start=real_start - 100,
    )
    assert supervise.stop(store, rec.run_id, grace=0.2) is False
    time.sleep(0.5)  # any escalation would have happened by now
    assert bystander.poll() is None, "a process mdtui did not start was signalled"


def test_stop_signals_the_recorded_group_when_identity_matches(store, tiny_plan, bystander) -> None:
    """The control case: the same record with the right start time does reach the process group."""
    rec = store.create_run(tiny_plan.experiments["tiny"], {"epochs": 1}, seed=0, devices=["cpu"])
    store.update(
        rec.run_id,
        status="running",
        pid=bystander.pid,
        pgid=bystander.pid,
        proc_start=process_start_time(bystander.pid),
    )
    assert supervise.stop(store, rec.run_id, grace=0.2) is True
    assert bystander.wait(timeout=10) == -signal.SIGTERM


def test_refresh_and_stop_ignore_a_pid_from_another_boot(store, tiny_plan, bystander) -> None:
    rec = store.create_run(tiny_plan.experiments["tiny"], {"epochs": 1}, seed=0, devices=["cpu"])
    start = process_start_time(bystander.pid)
    store.update(
        rec.run_id,
        status="running",
        pid=bystander.pid,
        pgid=bystander.pid,
        proc_start=start,
        supervisor_pid=bystander.pid,
        supervisor_start=start,
        boot_id="00000000-0000-0000-0000-000000000000",
    )
    if supervise.boot_id() is None:
        pytest.skip("no boot id on this platform")
    assert supervise.stop(store, rec.run_id, grace=0.2) is False
    time.sleep(0.3)
    assert bystander.poll() is None
    assert [r.status for r in reconcile(store)] == ["lost"]


def test_only_guarded_code_sends_signals() -> None:
    """Every os.kill / os.killpg in mdtui sits in supervise.py, in launcher.py (the group of a lost
    run, whose supervisor is gone) or in ranks.py (the ranks torchrun starts in sessions of their
    own), and their callers check pid identity first. Signal 0 is only an
    existence probe (the ledger's engine check) and sends nothing."""
    senders = []
    for path in _python_files(REPO / "mdtui"):
        for call, name in _calls(path):
            probe = len(call.args) == 2 and isinstance(call.args[1], ast.Constant) and call.args[1].value == 0
            if (name in ("os.kill", "os.killpg") and not probe) or name.endswith(
                (".send_signal", ".terminate")
            ):
                senders.append(f"{path.relative_to(REPO)}:{name}")
    # notify.py kills the group of its own notification command: a child it has not reaped yet (so
    # its pid cannot have been reused), in a session of its own.
    allowed = (
        "mdtui/execution/supervise.py:",
        "mdtui/execution/launcher.py:",
        "mdtui/execution/ranks.py:",
        "mdtui/execution/notify.py:",
    )
    assert senders and all(s.startswith(allowed) for s in senders), senders


# --------------------------------------------------------------------------- RESULTS.md


def _unescaped_outside_code(line: str) -> list[str]:
    """Markdown-active characters outside code spans that carry no backslash."""
    found, i = [], 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "`":
            run = len(line[i:]) - len(line[i:].lstrip("`"))
            close = line.find("`" * run, i + run)
            while close != -1 and line[close + run : close + run + 1] == "`":
                close = line.find("`" * run, close + run + 1)
            assert close != -1, f"unclosed code span in {line!r}"
            i = close + run
            continue
        if ch in "<>*_[]|~&":
            found.append(ch)
        i += 1
    return found


def test_results_entries_escape_user_text(tmp_path: Path, tiny_toml: Path) -> None:
    from results_helpers import write_events

    from mdtui.results.log import attach_note, record_finished

    name = "evil `name` <script>alert(1)</script> *b* _i_ [l](http://x) | ~s~\n# not a heading"
    group = "grp <b>bold</b> [x](y) *z*\n## injected ##"  # a trailing "#" run would close a heading
    store = RunStore(tmp_path / "runs", experiments_file=tiny_toml)
    exp = _experiment(name, group=group, sweep={"loss.`k`<x>": "v|*[y]*"})
    rec = store.create_run(exp, {"epochs": 2}, seed=0, devices=["cpu"])
    write_events(Path(rec.run_dir), rec.run_id, "completed", {"best_acc1": 60.0}, 2)
    store.update(rec.run_id, status="completed", best_acc1=60.0, best_epoch=1, epochs_done=2, ended_t=1.0)
    again = store.create_run(exp, {"epochs": 2}, seed=2, devices=["cpu"])
    write_events(Path(again.run_dir), again.run_id, "completed", {"best_acc1": 61.0}, 2)
    store.update(again.run_id, status="completed", best_acc1=61.0, best_epoch=1, epochs_done=2, ended_t=2.0)
    failed = store.create_run(exp, {"epochs": 2}, seed=1, devices=["cpu"])
    store.update(
        failed.run_id, status="failed", error="Boom <img src=x onerror=alert(1)> **x**\n# h", ended_t=1.0
    )
    log = tmp_path / "RESULTS.md"
    record_finished(store, rec.run_id)
    record_finished(store, failed.run_id)
    record_finished(store, again.run_id)
    attach_note(store, rec.run_id, "note with <iframe> and `tick` **bold**\n# fake heading | pipe")
    lines = log.read_text(encoding="utf-8").splitlines()
    found = [text for _, _, text in headings(lines)]
    assert sorted(found) == sorted(["Results", one_line(group), "Incomplete runs"]), found
    entries = [ln for ln in lines if ln.startswith("- ")]
    assert len(entries) == 3, lines
    for line in entries:
        assert not _unescaped_outside_code(line), line
    (completed_line,) = [ln for ln in entries if rec.run_id in ln]
    assert one_line(name) in completed_line  # inside a code span, verbatim
    assert "note with \\<iframe\\>" in completed_line
    assert md_unescape("\\<b\\>") == "<b>"
