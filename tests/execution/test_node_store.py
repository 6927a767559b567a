"""Only the manager writes the index: a cluster node writes its run directory, the poller the index.

The real-cluster test gives the job a Python that cannot open ``runs/mdtui.db`` at all (a
sitecustomize on the job's PYTHONPATH makes sqlite3 refuse it inside Slurm jobs and notes the
attempt): the run must still end right in the index, with its numbers and one RESULTS.md entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mdtui.execution.backends import launcher_for
from mdtui.execution.ending import RESULTS_PENDING_KEY
from mdtui.execution.node_store import RunDirStore, adopt
from mdtui.registry.plan import load_plan
from mdtui.runs.rundir import EXIT_FILE
from mdtui.runs.status import RunStatus
from mdtui.runs.store import RunStore
from tests.conftest import TINY_TOML, wait_for
from tests.slurm.conftest import slurm, slurm_cluster  # noqa: F401  (the real cluster, per test)

REPO = Path(__file__).resolve().parents[2]
NO_INDEX_ON_NODES = """\
import os
import sqlite3

if os.environ.get("SLURM_JOB_ID"):  # a process of a Slurm job: the index is not for it
    _connect = sqlite3.connect

    def connect(database, *args, **kwargs):
        if str(database).endswith("mdtui.db"):
            with open(os.environ["NODE_TRIED_INDEX"], "a") as note:
                note.write(f"{os.getpid()} {database}\\n")
            raise sqlite3.OperationalError("the index cannot be opened from a cluster node (test)")
        return _connect(database, *args, **kwargs)

    sqlite3.connect = connect
"""


def _project(tmp_path: Path, launcher: str = "local"):
    text = TINY_TOML.replace("[defaults]\n", '[defaults]\ndevice = "cpu"\n')
    if launcher == "slurm":
        text = text.replace(
            "stop_grace_seconds = 10",
            f'stop_grace_seconds = 10\nlauncher = "slurm"\n[settings.slurm]\npython = "{sys.executable}"\n',
        )
    toml = tmp_path / "experiments.toml"
    toml.write_text(text, encoding="utf-8")
    plan = load_plan(toml)
    return plan, RunStore(plan.settings.runs_dir, experiments_file=toml)


def test_the_node_store_writes_run_json_and_never_the_index(tmp_path: Path) -> None:
    plan, store = _project(tmp_path)
    rec = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=0, devices=[], status="queued")
    node = RunDirStore(rec.run_dir)
    node.update(rec.run_id, status=RunStatus.RUNNING.value, pid=4242, epochs_done=2)
    node.update(rec.run_id, run_json=False, status=RunStatus.FAILED.value)  # an index-only write: none
    seen = node.get(rec.run_id)
    assert (seen.status, seen.pid, seen.epochs_done) == ("running", 4242, 2)
    indexed = store.get(rec.run_id)
    assert (indexed.status, indexed.pid) == ("queued", None)


def test_the_manager_adopts_a_live_attempt_only_once_slurm_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    plan, store = _project(tmp_path)
    rec = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=0, devices=[], status="queued")
    store.update(rec.run_id, job_id="7", job_state="PENDING (BeginTime)")
    # run.json says running (an attempt that died before a requeue left it so): not this attempt's
    RunDirStore(rec.run_dir).update(rec.run_id, status="running", pid=11, epochs_done=1)
    assert adopt(store, store.get(rec.run_id)) is None and store.get(rec.run_id).status == "queued"
    store.update(rec.run_id, job_state="RUNNING on n1", status="starting")  # what the poll saw
    assert store.get(rec.run_id).status == "starting"  # (mirrored into run.json, over "running")
    adopted = adopt(store, store.get(rec.run_id))
    assert (adopted.status, adopted.pid, adopted.epochs_done) == ("running", 11, 1)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_a_node_that_cannot_open_the_index_still_ends_its_run_right_in_it(
    slurm,  # noqa: F811
    tmp_path: Path,
    fake_engine: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_INDEX_ON_NODES, encoding="utf-8")
    tried = tmp_path / "node-tried-the-index.txt"
    monkeypatch.setenv("PYTHONPATH", f"{guard}{os.pathsep}{REPO}")  # the job's Python, not this one
    monkeypatch.setenv("NODE_TRIED_INDEX", str(tried))
    plan, store = _project(tmp_path, "slurm")
    launcher = launcher_for(store, plan)
    rec = launcher.start_new(plan, plan.experiments["tiny"], seed=0)
    try:
        wait_for(lambda: launcher.poll(rec.run_id) in {"completed", "failed", "lost", "stopped"}, 90, 0.2)
    finally:
        subprocess.run(["scancel", str(rec.job_id)], capture_output=True, check=False)
    final = store.get(rec.run_id)
    assert not tried.exists(), tried.read_text()  # nothing on the node even tried to open the index
    assert final.status == RunStatus.COMPLETED, final.error
    assert final.epochs_done == 3 and final.best_acc1 is not None  # the node's numbers, taken in
    log = plan.settings.results_log.read_text(encoding="utf-8")
    assert log.count(rec.run_id) == 1  # the manager wrote the line the node left to it
    exit_info = (Path(final.run_dir) / EXIT_FILE).read_text(encoding="utf-8")
    assert RESULTS_PENDING_KEY in exit_info


def test_an_ended_run_whose_job_began_a_new_attempt_is_live_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from mdtui.execution.node_store import reopen

    plan, store = _project(tmp_path)
    rec = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=0, devices=[], status="queued")
    store.update(rec.run_id, job_id="7", status="failed", error="cancelled outside mdtui")
    ended = {"run_id": rec.run_id, "status": "failed", "attempt": "7:0"}
    (Path(rec.run_dir) / "exit.json.prev").write_text(json.dumps(ended), encoding="utf-8")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    RunDirStore(rec.run_dir).update(rec.run_id, status="running", pid=11)  # the same attempt: no
    assert reopen(store, store.get(rec.run_id)) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # Slurm ran the requeued job before a poll saw it
    RunDirStore(rec.run_dir).update(rec.run_id, status="running", pid=12)
    live = reopen(store, store.get(rec.run_id))
    assert (live.status, live.pid, live.error) == ("running", 12, None)
