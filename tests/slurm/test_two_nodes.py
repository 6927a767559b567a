"""Runs across the two nodes of the test cluster (tests/slurm/cluster.sh up --nodes 2), and runs that
outlive what happens to a node, an attempt or the controller (issue #19).

node2 is a second slurmd in its own network, UTS and mount namespace: a second host to Slurm and to
torchrun, joined to node1 by a veth link. Every run is a tiny CPU run on the `multi` partition (both
nodes); each test takes a few seconds of training at most.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdtui.runs.rundir import read_run_state
from tests.conftest import TINY_TOML, wait_for

REPO = Path(__file__).resolve().parents[2]
ENDED = {"completed", "failed", "lost", "stopped", "cancelled"}


@pytest.fixture
def cluster_project(tmp_path: Path, slurm, monkeypatch: pytest.MonkeyPatch):
    """(plan, store, launcher, cluster) for runs on the partition of both nodes."""
    from mdtui.execution.slurm import SlurmLauncher
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    if slurm.multi_partition is None:
        pytest.fail("the test cluster has one node: tests/slurm/cluster.sh up --nodes 2")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    toml = tmp_path / "experiments.toml"
    text = TINY_TOML.replace("[defaults]\n", '[defaults]\ndevice = "cpu"\n').replace(
        "stop_grace_seconds = 10",
        # a generous grace: on a loaded CI box an engine may need more than 10 s to save and stop
        'stop_grace_seconds = 60\nlauncher = "slurm"\n'
        f'[settings.slurm]\npartition = "{slurm.multi_partition}"\nsignal_seconds = 0\n',
    )
    # long enough to be caught mid-run (each epoch is a few milliseconds; the first waits for torch)
    text += '\n[experiment.long]\ngroup = "long"\nepochs = 400\nloss = "ce"\n'
    toml.write_text(text, encoding="utf-8")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    yield plan, store, SlurmLauncher.for_plan(store, plan), slurm
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        slurm.controller_start()  # a test that killed it failed before its restart
    for rec in store.list_runs():  # nothing this test submitted outlives it
        if rec.job_id:
            subprocess.run(["scancel", "--full", str(rec.job_id)], capture_output=True, check=False)


def _start(launcher, plan, exp, seed: int = 0):
    start = getattr(launcher, "start_new", None) or launcher.submit_new
    return start(plan, exp, seed=seed)


def _settled(launcher, run_id: str, statuses: set[str], timeout: float = 180.0):
    wait_for(lambda: launcher.poll(run_id) in statuses, timeout=timeout, interval=0.3)
    return launcher.store.get(run_id)


def _running_with_epochs(launcher, run_id: str, epochs: int = 1, timeout: float = 150.0) -> None:
    """Running, with ``epochs`` epochs done and (from one on) a last.pt to resume from: the epoch's
    event precedes its checkpoint, and a node that fails in between requeues a fresh start."""

    def ready() -> bool:
        rec = launcher.store.get(run_id)
        done = read_run_state(Path(rec.run_dir)).epochs_done >= epochs
        saved = epochs == 0 or (Path(rec.run_dir) / "checkpoints" / "last.pt").is_file()
        return launcher.poll(run_id) == "running" and done and saved

    wait_for(ready, timeout=timeout, interval=0.3)


def _entries(plan, run_id: str) -> int:
    log = plan.settings.results_log
    return log.read_text(encoding="utf-8").count(run_id) if log.exists() else 0


def _events(run_dir: str) -> list[dict]:
    lines = (Path(run_dir) / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_two_nodes_one_gloo_process_each_complete_with_one_event_stream(cluster_project) -> None:
    plan, store, launcher, cluster = cluster_project
    tiny = plan.experiments["tiny"]
    config = {**tiny.config, "epochs": 1, "distributed": {"processes": 1}}
    exp = dataclasses.replace(tiny, nodes=2, config=config)
    rec = _start(launcher, plan, exp)
    script = (Path(rec.run_dir) / "job.sbatch").read_text()
    assert f"exec {sys.executable} -m mdtui.execution.supervise" in script  # mdtui's own interpreter
    final = _settled(launcher, rec.run_id, ENDED, timeout=240)
    out = "".join(p.read_text() for p in Path(rec.run_dir).glob("slurm-*.err"))
    assert final.status == "completed", f"{final.error}\n{out}"
    events = _events(rec.run_dir)
    kinds = [e.get("event") or e.get("type") for e in events]
    # one stream: rank 0 alone writes events, once
    assert kinds.count("run_started") == 1 and kinds.count("run_finished") == 1, kinds
    # a correct 2-node x 1 run gets no "processes = 1 but 2 process(es)" warning
    assert not [e for e in events if "process(es)" in json.dumps(e)], events
    assert _entries(plan, rec.run_id) == 1
    job = cluster.job(str(final.job_id))
    assert job is not None and job.node in ("node[1-2]", "node1,node2"), job


def _node_of(launcher, run_id: str) -> str:
    rec = launcher.store.get(run_id)
    return (rec.job_state or "").split(" on ", 1)[1].split(",")[0]


def test_a_node_set_down_mid_run_requeues_and_the_run_resumes_in_its_directory(cluster_project) -> None:
    plan, store, launcher, cluster = cluster_project
    rec = _start(launcher, plan, plan.experiments["long"])
    _running_with_epochs(launcher, rec.run_id)
    first = _node_of(launcher, rec.run_id)
    cluster.node_down("mdtui test: node failure", node=first)
    # the attempt is over: queued again, the dead attempt's supervisor forgotten, Slurm's reason
    # shown and refreshed (never "running" for good, never "stopping")
    wait_for(lambda: launcher.poll(rec.run_id) == "queued", timeout=150, interval=0.3)
    queued = store.get(rec.run_id)
    assert queued.supervisor_pid is None and queued.pid is None
    assert (queued.error or "").startswith("requeued by Slurm"), queued.error
    assert (queued.job_state or "").startswith("PENDING"), queued.job_state
    # the next attempt runs on the other node, resuming from last.pt in the same directory
    _running_with_epochs(launcher, rec.run_id, epochs=read_run_state(Path(rec.run_dir)).epochs_done + 1)
    assert _node_of(launcher, rec.run_id) != first
    info = json.loads((Path(rec.run_dir) / "run.json").read_text())
    assert info.get("slurm_restarts") == 1 and info.get("resume") is True
    assert store.get(rec.run_id).run_dir == rec.run_dir and len(store.list_runs()) == 1
    assert launcher.stop(rec.run_id)
    final = _settled(launcher, rec.run_id, ENDED)
    assert final.status == "stopped", final.error
    assert _entries(plan, rec.run_id) == 1  # one run, one RESULTS.md entry, across its two attempts


def test_a_stop_during_a_requeue_ends_the_run_stopped_not_cancelled_outside_mdtui(cluster_project) -> None:
    plan, store, launcher, cluster = cluster_project
    rec = _start(launcher, plan, plan.experiments["long"])
    _running_with_epochs(launcher, rec.run_id, epochs=0)
    subprocess.run(["scontrol", "requeue", str(rec.job_id)], check=True, capture_output=True)
    # Slurm holds a requeued job (BeginTime) before it runs it again: the stop lands in that gap
    cluster.wait_for_job_state(str(rec.job_id), {"PENDING"}, timeout=30)
    assert launcher.stop(rec.run_id)
    final = _settled(launcher, rec.run_id, ENDED)
    assert final.status in ("stopped", "cancelled"), final.error
    assert "outside mdtui" not in (final.error or ""), final.error
    assert cluster.job(str(rec.job_id)).state == "CANCELLED"  # not run again
    assert _entries(plan, rec.run_id) == 1


def test_the_controller_killed_mid_run_is_said_stop_still_reaches_the_run_and_restart_settles(
    cluster_project,
) -> None:
    from mdtui.execution.slurm_status import UNREACHABLE

    plan, store, launcher, cluster = cluster_project
    rec = _start(launcher, plan, plan.experiments["long"])
    _running_with_epochs(launcher, rec.run_id, epochs=0)
    cluster.controller_kill()
    t0 = time.monotonic()
    assert launcher.poll(rec.run_id) == "running"  # the last known state, said to be that
    assert time.monotonic() - t0 < 5  # one short try per poll (it took 12 s)
    line = store.get(rec.run_id).slurm_line or ""
    assert f"{UNREACHABLE} — last known state at " in line and "RUNNING" in line, line
    # mdtui's stop cannot reach Slurm; the supervisor reads the request itself and stops the engine
    # with SIGTERM (last.pt saved), never a SIGKILL without one
    t0 = time.monotonic()
    assert launcher.stop(rec.run_id)
    assert time.monotonic() - t0 < 10  # it took 37 s
    wait_for(lambda: (Path(rec.run_dir) / "exit.json").is_file(), timeout=150, interval=0.3)
    ending = json.loads((Path(rec.run_dir) / "exit.json").read_text())
    assert ending["status"] == "stopped" and ending["event_status"] == "stopped", ending
    assert "SIGKILL" not in (ending.get("error") or ""), ending
    cluster.controller_start()
    final = _settled(launcher, rec.run_id, ENDED)
    assert final.status == "stopped" and _entries(plan, rec.run_id) == 1
    # Slurm's word again once it answers
    wait_for(
        lambda: (
            launcher.poll(rec.run_id) and not (store.get(rec.run_id).job_state or "").startswith(UNREACHABLE)
        ),
        timeout=30,
        interval=0.3,
    )
