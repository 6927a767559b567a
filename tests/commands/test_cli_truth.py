"""CLI lines that must tell the truth the TUI tells (issue 20): a paused queue is said."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.scheduling import scheduler


def test_status_says_the_queue_is_paused(tiny_toml: Path, tiny_plan: Any, store: Any) -> None:
    scheduler.enqueue(store, tiny_plan, ["tiny"])
    scheduler.pause(store)
    out = CliRunner().invoke(app, ["-f", str(tiny_toml), "status"], catch_exceptions=False).output
    assert "the queue is paused: 1 queued run waits until" in " ".join(out.split())
    scheduler.resume(store)
    out = CliRunner().invoke(app, ["-f", str(tiny_toml), "status"], catch_exceptions=False).output
    assert "paused" not in out


def test_logs_of_an_experiment_skip_a_cancelled_entry_and_say_when_there_is_no_output(
    tiny_toml: Path, tiny_plan: Any, store: Any
) -> None:
    from mdtui.registry.plan import engine_config

    exp = tiny_plan.experiments["tiny"]
    ran = store.create_run(
        exp, engine_config(tiny_plan, exp, run_id=None, seed=0), seed=0, devices=["cpu"], status="completed"
    )
    store.update(ran.run_id, started_t=1.0, ended_t=2.0, created_t=1.0)
    (Path(ran.run_dir) / "stdout.log").write_text("epoch 1 done\n")
    cancelled = store.create_run(
        exp, engine_config(tiny_plan, exp, run_id=None, seed=0), seed=0, devices=[], status="cancelled"
    )
    store.update(cancelled.run_id, created_t=5.0)

    def logs(ref: str) -> str:
        result = CliRunner().invoke(app, ["-f", str(tiny_toml), "logs", ref], catch_exceptions=False)
        assert result.exit_code == 0
        return " ".join(result.output.split())

    out = logs("tiny")
    assert "epoch 1 done" in out and f"showing {ran.run_id}" in out
    assert (
        logs(cancelled.run_id) == f"run {cancelled.run_id} (tiny, cancelled) has no output: it never started"
    )


def test_queue_piped_prints_every_value_whole_and_counts_in_english(tmp_path: Path, monkeypatch: Any) -> None:
    import contextlib
    import os
    import signal

    from conftest import TINY_TOML

    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    long_name = "cifar10-lt100-resnet32-refl-mislas-calibrated-label-aware-long-name"
    toml = tmp_path / "experiments.toml"
    toml.write_text(TINY_TOML + f'\n[experiment.{long_name}]\ngroup = "demo"\nloss = "ce"\n')
    monkeypatch.setenv("COLUMNS", "80")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    scheduler.pause(store)  # nothing starts: the entry stays queued
    (rec,) = scheduler.enqueue(store, plan, [long_name])
    try:
        out = CliRunner().invoke(app, ["-f", str(toml), "queue"], catch_exceptions=False).output
    finally:
        for proc in scheduler._STARTED:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        scheduler._STARTED.clear()
    assert "1 entry" in out and "1 entries" not in out
    line = next(line for line in out.splitlines() if rec.run_id in line)
    assert long_name in line and len(line) > 80  # whole, not cut to the 80 columns of a terminal
