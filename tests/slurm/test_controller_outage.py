"""`mdtui stop` and `mdtui status` while slurmctld does not answer, against the real test cluster
(issue #19): a pending job cannot be cancelled then, and the CLI says so instead of "no live process"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.execution.ending import STOP_REQUEST
from tests.conftest import TINY_TOML

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def held_run(tmp_path: Path, slurm, monkeypatch: pytest.MonkeyPatch):
    """(toml, store, record) of a Slurm run whose job Slurm holds (--hold: PENDING until released)."""
    from mdtui.execution.slurm import SlurmLauncher
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    toml = tmp_path / "experiments.toml"
    toml.write_text(
        TINY_TOML.replace("[defaults]\n", '[defaults]\ndevice = "cpu"\n').replace(
            "stop_grace_seconds = 10",
            f'stop_grace_seconds = 10\nlauncher = "slurm"\n[settings.slurm]\npython = "{sys.executable}"\n'
            'extra = ["--hold"]\n',
        ),
        encoding="utf-8",
    )
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    rec = SlurmLauncher.for_plan(store, plan).start_new(plan, plan.experiments["tiny"], seed=0)
    slurm.wait_for_job_state(str(rec.job_id), {"PENDING"}, timeout=30)
    yield toml, store, rec, slurm
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        slurm.controller_start()  # the test failed before its restart
    subprocess.run(["scancel", "--full", str(rec.job_id)], capture_output=True, check=False)


def test_stop_of_a_pending_job_with_the_controller_down_says_what_it_did(held_run) -> None:
    toml, store, rec, cluster = held_run
    runner = CliRunner()
    cluster.controller_kill()
    t0 = time.monotonic()
    status = runner.invoke(app, ["-f", str(toml), "status"], env={"COLUMNS": "100"})
    assert status.exit_code == 0 and time.monotonic() - t0 < 8, status.output
    assert "Slurm unreachable — last known state at " in status.output.splitlines()[-1], status.output
    stop = runner.invoke(app, ["-f", str(toml), "stop", rec.run_id], env={"COLUMNS": "400"})
    text = " ".join(stop.output.split())
    assert stop.exit_code == 1 and "Slurm is unreachable" in text and "not cancelled yet" in text, text
    assert "no live process" not in text
    assert (Path(rec.run_dir) / STOP_REQUEST).is_file()
    cluster.controller_start()
    again = runner.invoke(app, ["-f", str(toml), "stop", rec.run_id], env={"COLUMNS": "400"})
    assert again.exit_code == 0 and "while its job waited in Slurm's queue" in again.output, again.output
    assert cluster.wait_for_job_state(str(rec.job_id), {"CANCELLED"}, timeout=30)
    runner.invoke(app, ["-f", str(toml), "status"])  # a poll settles it
    final = store.get(rec.run_id)
    assert final.status == "cancelled" and "before it started" in (final.error or ""), final.error
