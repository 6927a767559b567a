"""Both backends honour one ``Launcher`` protocol: the same verbs, return types, errors and flags.

Each test runs once per backend: the local supervisor, and a real one-node Slurm
(tests/slurm/cluster.sh; skipped only where its daemons cannot start). Runs use the fake engine
(tests/fixtures/fake_engine.py), which a Slurm job inherits through the environment, so the
backends and not the training are what is tested. Callers get their launcher the only ways mdtui
does: ``launcher_for`` (the plan's ``[settings] launcher``) and ``launcher_of`` (a run's record).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdtui.execution.backends import launcher_for, launcher_of
from mdtui.execution.launching import LaunchError, LaunchRefused, StopTarget
from mdtui.registry.plan import load_plan
from mdtui.runs.rundir import EXIT_FILE, read_run_state
from mdtui.runs.status import RunStatus
from mdtui.runs.store import RunRecord, RunStore
from tests.conftest import TINY_TOML, wait_for
from tests.slurm.conftest import slurm, slurm_cluster  # noqa: F401  (the real cluster, per test)

REPO = Path(__file__).resolve().parents[2]
ENDED = {s.value for s in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.LOST)}
ALL_STATUSES = {s.value for s in RunStatus}
PROJECT_TOML = (
    TINY_TOML.replace("[defaults]\n", '[defaults]\ndevice = "cpu"\n')
    + """
[experiment.long]
group = "long"
epochs = 400
loss = "ce"
"""
)
BACKENDS = [
    pytest.param("local", id="local"),
    # marked as tests/slurm/conftest.py marks every test of the one cluster (one xdist worker)
    pytest.param(
        "slurm", id="slurm", marks=[pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]
    ),
]


@pytest.fixture(params=BACKENDS)
def project(
    request: pytest.FixtureRequest, tmp_path: Path, fake_engine: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple]:
    """(plan, store, launcher) of a project whose `[settings] launcher` is the backend under test."""
    text = PROJECT_TOML
    if request.param == "slurm":
        request.getfixturevalue("slurm")
        monkeypatch.setenv("PYTHONPATH", str(REPO))  # the job's supervisor imports this checkout
        text = text.replace(
            "stop_grace_seconds = 10",
            f'stop_grace_seconds = 10\nlauncher = "slurm"\n[settings.slurm]\npython = "{sys.executable}"\n',
        )
    toml = tmp_path / "experiments.toml"
    toml.write_text(text, encoding="utf-8")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    launcher = launcher_for(store, plan)
    assert launcher.name == request.param
    yield plan, store, launcher
    for rec in store.list_runs():  # nothing a test started outlives it
        if rec.status not in ENDED:
            launcher_of(store, rec, plan).kill(rec.run_id)
        if rec.job_id:
            subprocess.run(["scancel", "--full", str(rec.job_id)], capture_output=True, check=False)


def _ends(launcher, run_id: str, timeout: float = 90.0) -> RunRecord:
    wait_for(lambda: launcher.poll(run_id) in ENDED, timeout=timeout, interval=0.2)
    return launcher.store.get(run_id)


def _results_entries(plan, run_id: str) -> int:
    log = plan.settings.results_log
    return log.read_text(encoding="utf-8").count(run_id) if log.exists() else 0


def test_capabilities_are_flags_of_the_backend(project) -> None:
    _plan, _store, launcher = project
    assert isinstance(launcher.queues_itself, bool) and isinstance(launcher.places_devices, bool)
    # a backend that queues runs itself also places them: mdtui's ledger is for the local machine
    assert launcher.places_devices is not launcher.queues_itself


def test_a_new_run_is_handed_over_as_a_record_and_ends_once_in_the_results(project) -> None:
    plan, store, launcher = project
    rec = launcher.start_new(plan, plan.experiments["tiny"], seed=0)
    assert isinstance(rec, RunRecord) and store.get(rec.run_id) is not None
    assert launcher.poll(rec.run_id) in ALL_STATUSES
    assert type(launcher_of(store, rec, plan)) is type(launcher)  # the two readers agree
    host, devices = launcher.where(rec.run_id)
    assert isinstance(host, str) and isinstance(devices, list)

    final = _ends(launcher, rec.run_id)
    assert final.status == RunStatus.COMPLETED, final.error
    assert launcher.wait(rec.run_id, timeout=30)
    assert (Path(final.run_dir) / EXIT_FILE).is_file()
    assert _results_entries(plan, rec.run_id) == 1
    # an ended run: nothing to stop, and a completed run is never retrained
    assert launcher.stop_target(final) is None
    assert launcher.stop(rec.run_id) is False and launcher.kill(rec.run_id) is False
    with pytest.raises(LaunchRefused, match="already completed"):
        launcher.resume(final)


def test_stop_saves_resume_goes_on_and_kill_ends_it(project, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, store, launcher = project
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.3")  # `long` takes two minutes: it is stopped first
    rec = launcher.start_new(plan, plan.experiments["long"], seed=0)
    with pytest.raises(LaunchError, match="stop it first"):  # one exception family for both
        launcher.resume(store.get(rec.run_id))

    def trained() -> bool:
        now = store.get(rec.run_id)
        return (
            launcher.poll(rec.run_id) == RunStatus.RUNNING
            and read_run_state(Path(now.run_dir)).epochs_done >= 1
        )

    wait_for(trained, timeout=90, interval=0.2)
    assert launcher.stop_target(store.get(rec.run_id)) == StopTarget.LIVE
    assert launcher.stop(rec.run_id) is True
    stopped = _ends(launcher, rec.run_id)
    assert stopped.status == RunStatus.STOPPED, stopped.error
    assert (Path(stopped.run_dir) / "checkpoints" / "last.pt").is_file()

    resumed = launcher.resume(stopped)
    assert isinstance(resumed, RunRecord) and resumed.run_id == rec.run_id
    assert resumed.status not in ENDED
    wait_for(trained, timeout=90, interval=0.2)
    assert launcher.kill(rec.run_id) is True
    killed = _ends(launcher, rec.run_id)
    assert killed.status == RunStatus.STOPPED, killed.error
