"""The notify command: validated keys, the run's facts in its environment, once per ending, never in
the way of the run (mdtui/execution/notify.py). The process tests run a real supervisor (fake engine)
and a real notify command that writes a file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_TOML, wait_for

from mdtui.execution import supervise
from mdtui.execution.notify import claim, message, notify_env, run_command, wants
from mdtui.execution.reconcile import reconcile
from mdtui.registry.plan import ExperimentsError, load_plan
from mdtui.runs.prepare import create_run_for
from mdtui.runs.store import RunRecord, RunStore

# appends the MDTUI_* environment it was given, as one JSON line, to the file named by its argument
WRITER = (
    "import json, os, sys; "
    "open(sys.argv[1], 'a').write(json.dumps({k: v for k, v in os.environ.items() "
    "if k.startswith('MDTUI_')}) + '\\n')"
)


def project(tmp_path: Path, settings: str = "", tiny: str = "") -> Path:
    text = TINY_TOML.replace("stop_grace_seconds = 10\n", f"stop_grace_seconds = 10\n{settings}\n")
    text = text.replace('loss = "ce"\n', f'loss = "ce"\n{tiny}\n', 1)
    path = tmp_path / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    return path


def writer_command(out: Path) -> str:
    return json.dumps([sys.executable, "-c", WRITER, str(out)])


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- keys


def test_settings_notify_is_every_experiments_unless_it_has_its_own(tmp_path) -> None:
    path = project(
        tmp_path,
        settings='notify = ["notify-send", "mdtui"]\nnotify_on = "failure"',
        tiny="notify = []  # not this one",
    )
    plan = load_plan(path)
    assert plan.settings.notify == ("notify-send", "mdtui") and plan.settings.notify_on == "failure"
    assert plan.experiments["tiny"].notify == ()
    focal = plan.experiments["tiny-focal"]
    assert focal.notify == ("notify-send", "mdtui") and focal.notify_on == "failure"


@pytest.mark.parametrize(
    ("settings", "tiny", "where", "says"),
    [
        ('notify = "curl x"', "", "key settings.notify", "a command as a list of strings"),
        ('notify_on = "fail"', "", "key settings.notify_on", '"end" (every ending) or "failure"'),
        ("", "notify = [1, 2]", 'experiment "tiny", key notify', "a list of strings"),
        ("", 'notify = [""]', 'experiment "tiny", key notify', "program (its first item) is empty"),
        ("", 'notify_on = "always"', 'experiment "tiny", key notify_on', "failed and lost runs only"),
    ],
)
def test_bad_notify_values_are_located_errors(tmp_path, settings, tiny, where, says) -> None:
    with pytest.raises(ExperimentsError) as info:
        load_plan(project(tmp_path, settings=settings, tiny=tiny))
    text = info.value.format()
    assert where in text and says in text and "experiments.toml:" in text


# --------------------------------------------------------------------------- pure parts


def test_failure_only_tells_failed_and_lost_runs() -> None:
    assert [s for s in ("completed", "failed", "stopped", "lost") if wants("failure", s)] == [
        "failed",
        "lost",
    ]
    assert all(wants("end", s) for s in ("completed", "failed", "stopped", "lost"))
    assert not wants("end", "cancelled") and not wants("end", "running")


def test_the_environment_carries_the_runs_facts(tmp_path) -> None:
    rec = RunRecord(
        run_id="20261206-010203-abcd",
        experiment="r32[x=1]",
        group="g",
        run_dir=tmp_path,
        status="failed",
        started_t=100.0,
        ended_t=190.4,
        best_acc1=81.234,
        best_epoch=4,
        epochs_done=6,
        total_epochs=10,
        exit_code=1,
        error="CUDA out of memory\nmore",
    )
    env = notify_env(rec)
    assert env["MDTUI_STATUS"] == "failed" and env["MDTUI_BEST_ACC1"] == "81.23"
    assert env["MDTUI_BEST_EPOCH"] == "5" and env["MDTUI_SECONDS"] == "90" and env["MDTUI_EXIT_CODE"] == "1"
    assert env["MDTUI_RUN_DIR"] == str(tmp_path) and env["MDTUI_LAST_ACC1"] == ""
    assert message(rec) == (
        "mdtui: r32[x=1] (20261206-010203-abcd) failed, best acc1 81.23% at epoch 5: CUDA out of memory"
    )


def test_an_ending_is_claimed_once(tmp_path) -> None:
    (tmp_path / "run.json").write_text("{}")
    assert claim(tmp_path, "1.0:completed") and not claim(tmp_path, "1.0:completed")
    assert claim(tmp_path, "2.0:completed")  # the next attempt's ending
    assert not claim(tmp_path / "gone", "1.0:completed") and not (tmp_path / "gone").exists()


def test_a_failing_or_hanging_command_is_one_line_in_stderr_log(tmp_path) -> None:
    log = tmp_path / "stderr.log"
    assert run_command([sys.executable, "-c", "raise SystemExit(3)"], 10, log) == 3
    assert run_command([str(tmp_path / "no-such-program")], 10, log) is None
    began = time.monotonic()
    # a child of the command keeps the group alive: the whole group is killed at the limit
    hang = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    assert run_command([sys.executable, "-c", hang], 0.5, log) is None
    assert time.monotonic() - began < 10
    said = log.read_text().splitlines()
    assert said[0].startswith("mdtui: notify: `") and said[0].endswith("exited with code 3")
    assert "could not start" in said[1] and said[2].endswith("killed after the 0.5 s time limit")


# --------------------------------------------------------------------------- real processes
# (the slow marker on each: they start real supervisors and engines)


def _finish(store: RunStore, plan, name: str = "tiny", env: dict[str, str] | None = None):
    rec = create_run_for(plan, store, plan.experiments[name], seed=0, devices=["cpu"])
    pid = supervise.launch(store, rec.run_id, devices=["cpu"], env=env)
    assert supervise.wait_supervisor(pid, timeout=30)
    return store.get(rec.run_id)


@pytest.mark.slow
def test_a_finished_run_runs_the_command_once_with_its_facts(tmp_path, fake_engine) -> None:
    out = tmp_path / "told.jsonl"
    plan = load_plan(project(tmp_path, settings=f"notify = {writer_command(out)}"))
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    final = _finish(store, plan)
    told = wait_for(lambda: lines(out), timeout=20)
    assert len(told) == 1
    env = told[0]
    assert env["MDTUI_RUN_ID"] == final.run_id and env["MDTUI_EXPERIMENT"] == "tiny"
    assert env["MDTUI_STATUS"] == "completed" and env["MDTUI_REASON"] == ""
    assert env["MDTUI_BEST_ACC1"] == "70.00" and env["MDTUI_RUN_DIR"] == str(final.run_dir)
    assert final.status == "completed"
    # settle is idempotent: the same ending settled again (a reconcile) is not told twice
    from mdtui.execution.ending import Ending, EngineEnd, settle
    from mdtui.runs.rundir import read_run_state
    from mdtui.runs.status import RunStatus

    settle(
        store,
        final,
        Ending(RunStatus(final.status)),
        EngineEnd(exit_code=0),
        read_run_state(Path(final.run_dir)),
    )
    assert reconcile(store) == []
    time.sleep(1.0)  # a second helper would have written by now
    assert len(lines(out)) == 1


@pytest.mark.slow
def test_failure_only_skips_a_completed_run_and_tells_a_failed_one(tmp_path, fake_engine) -> None:
    out = tmp_path / "told.jsonl"
    plan = load_plan(project(tmp_path, settings=f'notify = {writer_command(out)}\nnotify_on = "failure"'))
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    ok = _finish(store, plan)
    bad = _finish(store, plan, env={"FAKE_FAIL_AT": "1"})
    told = wait_for(lambda: lines(out), timeout=20)
    time.sleep(0.5)
    assert [t["MDTUI_RUN_ID"] for t in lines(out)] == [bad.run_id]
    assert told[0]["MDTUI_STATUS"] == "failed" and told[0]["MDTUI_REASON"] == "fake failure at epoch 1"
    assert ok.status == "completed" and bad.status == "failed"


@pytest.mark.slow
def test_a_broken_command_never_changes_the_run(tmp_path, fake_engine) -> None:
    plan = load_plan(
        project(tmp_path, settings=f'notify = ["{sys.executable}", "-c", "raise SystemExit(7)"]')
    )
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    final = _finish(store, plan)
    assert final.status == "completed" and final.exit_code == 0
    err = Path(final.run_dir) / "stderr.log"
    wait_for(lambda: "exited with code 7" in err.read_text(), timeout=20)
    assert json.loads((Path(final.run_dir) / "exit.json").read_text())["status"] == "completed"


def test_the_helper_is_a_module_that_runs_alone(tmp_path) -> None:
    """The detached helper is started as ``python -m mdtui.execution.notify``: it must run by itself."""
    out = tmp_path / "x.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mdtui.execution.notify",
            str(tmp_path),
            "10",
            sys.executable,
            "-c",
            WRITER,
            str(out),
        ],
        env={"MDTUI_STATUS": "lost", "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert proc.returncode == 0 and lines(out)[0]["MDTUI_STATUS"] == "lost"
