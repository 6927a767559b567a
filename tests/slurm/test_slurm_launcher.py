"""The Slurm launcher against a real one-node Slurm (tests/slurm/cluster.sh), with the real engine.

Every run is a tiny CPU run (``device = "cpu"``: the job asks for no GPU) submitted exactly as
`mdtui run --launcher slurm` does; the job runs the supervisor on the node, which writes the run
directory, exit.json and RESULTS.md as a local run would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.system import slurm as slurm_cli
from tests.conftest import TINY_TOML, wait_for

REPO = Path(__file__).resolve().parents[2]

SLOW_TOML = (
    TINY_TOML.replace("[defaults]\n", '[defaults]\ndevice = "cpu"\n')
    + """
[experiment.long]
group = "long"
epochs = 400
loss = "ce"
"""
)


@pytest.fixture
def project(tmp_path: Path, slurm, monkeypatch: pytest.MonkeyPatch):
    """(plan, store, launcher) for a project whose runs go to Slurm; jobs inherit this environment."""
    from mdtui.execution.slurm import SlurmLauncher
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    toml = tmp_path / "experiments.toml"
    text = SLOW_TOML.replace(
        "stop_grace_seconds = 10",
        # a generous grace: on a loaded CI box an engine may need more than 10 s to save and stop
        f'stop_grace_seconds = 40\nlauncher = "slurm"\n'
        f'[settings.slurm]\npython = "{sys.executable}"\nsignal_seconds = 50\n',
    )
    toml.write_text(text, encoding="utf-8")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    yield plan, store, SlurmLauncher.for_plan(store, plan)
    for rec in store.list_runs():  # nothing this test submitted outlives it
        if rec.job_id:
            subprocess.run(["scancel", "--full", str(rec.job_id)], capture_output=True, check=False)


def _settled(launcher, run_id: str, statuses: set[str], timeout: float = 180.0):
    wait_for(lambda: launcher.poll(run_id) in statuses, timeout=timeout, interval=0.5)
    return launcher.store.get(run_id)


def _entries(plan, run_id: str) -> int:
    log = plan.settings.results_log
    return log.read_text(encoding="utf-8").count(run_id) if log.exists() else 0


def _epochs(rec) -> int:
    from mdtui.runs.rundir import read_run_state

    return read_run_state(Path(rec.run_dir)).epochs_done


def test_submit_runs_the_supervisor_on_the_node_and_completes(project) -> None:
    plan, store, launcher = project
    rec = launcher.start_new(plan, plan.experiments["tiny"], seed=0)
    assert rec.job_id and rec.status == "queued"
    script = (Path(rec.run_dir) / "job.sbatch").read_text()
    assert "--gres" not in script  # a CPU run asks for no GPU
    final = _settled(launcher, rec.run_id, {"completed", "failed", "lost", "stopped"})
    assert final.status == "completed", final.error
    run_dir = Path(final.run_dir)
    for name in (
        "exit.json",
        "events.jsonl",
        "checkpoints/last.pt",
        "config.json",
        f"slurm-{rec.job_id}.out",
    ):
        assert (run_dir / name).exists(), name
    assert _entries(plan, rec.run_id) == 1
    assert final.job_state.startswith("COMPLETED") or "RUNNING" in final.job_state


def test_stop_through_slurm_saves_last_pt_and_resume_completes(project) -> None:
    plan, store, launcher = project
    rec = launcher.start_new(plan, plan.experiments["long"], seed=0)
    wait_for(
        lambda: launcher.poll(rec.run_id) == "running" and _epochs(store.get(rec.run_id)) >= 1,
        timeout=150,
        interval=0.5,
    )
    runner = CliRunner()
    stop = runner.invoke(app, ["-f", str(plan.settings.path), "stop", rec.run_id])  # scancel TERM
    assert stop.exit_code == 0, stop.output
    final = _settled(launcher, rec.run_id, {"stopped", "failed", "lost", "completed"})
    assert final.status == "stopped", final.error
    last = Path(final.run_dir) / "checkpoints" / "last.pt"
    assert "epoch" in torch.load(last, map_location="cpu", weights_only=False)
    done = _epochs(final)
    # --resume through Slurm: the same directory, a new job, the run goes on from last.pt
    cfg = Path(final.run_dir) / "config.json"
    import json

    config = json.loads(cfg.read_text())
    config["epochs"] = done + 2
    cfg.write_text(json.dumps(config))
    # the experiment got more time since: resume takes the file as it is now, and --time over it
    # (it reused run.json's options, and only editing run.json by hand gave a run more time)
    toml = plan.settings.path
    toml.write_text(toml.read_text() + 'slurm = { time = "30" }\n')
    from mdtui.execution.slurm import SlurmLauncher
    from mdtui.registry.plan import load_plan

    assert SlurmLauncher.for_plan(store, load_plan(toml)).options_for("long").time == "30"
    resume = runner.invoke(app, ["-f", str(toml), "run", "--resume", rec.run_id, "--time", "45", "--detach"])
    assert resume.exit_code == 0, resume.output
    assert store.get(rec.run_id).job_id != rec.job_id  # a new job, the same run directory
    assert "#SBATCH --time=45" in (Path(final.run_dir) / "job.sbatch").read_text()
    resumed = _settled(launcher, rec.run_id, {"completed", "failed", "stopped", "lost"})
    assert resumed.status == "completed", resumed.error
    assert _entries(plan, rec.run_id) == 1


def test_time_limit_warning_ends_the_run_stopped_with_last_pt(project) -> None:
    plan, store, launcher = project
    import dataclasses

    exp = dataclasses.replace(plan.experiments["long"], slurm={"time": "1", "signal_seconds": 55})
    rec = launcher.start_new(plan, exp, seed=0)
    assert "--time=1" in (Path(rec.run_dir) / "job.sbatch").read_text()
    final = _settled(launcher, rec.run_id, {"stopped", "failed", "lost", "completed"}, timeout=150)
    assert final.status == "stopped", final.error
    assert final.error == "time limit"
    assert (Path(final.run_dir) / "checkpoints" / "last.pt").is_file()


def test_requeue_mid_run_resumes_in_the_same_directory(project) -> None:
    plan, store, launcher = project
    import dataclasses

    exp = dataclasses.replace(
        plan.experiments["long"], config={**plan.experiments["long"].config, "epochs": 12}
    )
    rec = launcher.start_new(plan, exp, seed=0)
    wait_for(
        lambda: launcher.poll(rec.run_id) == "running" and _epochs(store.get(rec.run_id)) >= 2,
        timeout=150,
        interval=0.5,
    )
    subprocess.run(["scontrol", "requeue", str(rec.job_id)], check=True)

    def finished() -> bool:
        job = slurm_cli.job_states([str(rec.job_id)]).get(str(rec.job_id))
        if job is not None and job.state == "PENDING":  # Slurm holds a requeued job back (BeginTime)
            subprocess.run(["scontrol", "update", f"JobId={rec.job_id}", "StartTime=now"], check=False)
        return launcher.poll(rec.run_id) == "completed"  # "failed" (cancelled by the requeue) comes first

    wait_for(finished, timeout=150, interval=0.5)
    final = store.get(rec.run_id)
    assert final.status == "completed", final.error
    info = __import__("json").loads((Path(final.run_dir) / "run.json").read_text())
    assert info.get("slurm_restarts", 0) >= 1 and info.get("resume") is True
    assert len(list((Path(final.run_dir).parent).iterdir())) == 1  # no second run directory
    assert _entries(plan, rec.run_id) == 1


def test_from_chain_is_an_afterok_dependency_and_a_failed_upstream_blocks(project) -> None:
    plan, store, launcher = project
    import dataclasses

    broken = dataclasses.replace(
        plan.experiments["tiny"], config={**plan.experiments["tiny"].config, "data": {"name": "no-such-data"}}
    )
    up = launcher.start_new(plan, broken, seed=0)
    down = launcher.start_new(plan, plan.experiments["tiny-focal"], seed=0)
    assert f"--dependency=afterok:{up.job_id}" in (Path(down.run_dir) / "job.sbatch").read_text()
    assert _settled(launcher, up.run_id, {"failed", "completed", "lost"}).status == "failed"
    blocked = _settled(launcher, down.run_id, {"blocked"}, timeout=150)
    assert "DependencyNeverSatisfied" in (blocked.error or "")
    assert launcher.stop(down.run_id)
    assert _settled(launcher, down.run_id, {"cancelled", "failed", "stopped"}).status == "cancelled"
    assert os.path.exists(Path(down.run_dir) / "exit.json")


def test_scancel_kill_and_a_node_going_down_end_honestly(project, slurm) -> None:
    plan, store, launcher = project
    killed = launcher.start_new(plan, plan.experiments["long"], seed=0)
    wait_for(
        lambda: launcher.poll(killed.run_id) == "running" and _epochs(store.get(killed.run_id)) >= 1,
        timeout=150,
        interval=0.5,
    )
    subprocess.run(["scancel", "--signal=KILL", "--full", str(killed.job_id)], check=True)
    final = _settled(launcher, killed.run_id, {"lost", "failed", "stopped", "completed"})
    # nobody asked mdtui: Slurm cancels the job (TERM, then KILL after KillWait); it says so
    assert final.status == "failed" and "cancelled outside mdtui" in final.error, final.error
    assert (Path(final.run_dir) / "exit.json").is_file() and _epochs(final) >= 1

    down = launcher.start_new(plan, plan.experiments["long"], seed=1)
    checkpoint = Path(down.run_dir) / "checkpoints" / "last.pt"
    # the epoch event comes before its last.pt (a full disk must not cost the epoch's numbers):
    # the node goes down only once a checkpoint exists, else the requeued job starts afresh
    wait_for(
        lambda: (
            launcher.poll(down.run_id) == "running"
            and _epochs(store.get(down.run_id)) >= 1
            and checkpoint.is_file()
        ),
        timeout=150,
        interval=0.5,
    )
    slurm.node_down("mdtui test")
    # Slurm requeues the job of a failed node: the run waits in Slurm's queue, resumable, not lost
    wait_for(lambda: launcher.poll(down.run_id) == "queued", timeout=150, interval=0.5)
    assert "requeued" in (store.get(down.run_id).error or "")
    assert checkpoint.is_file()


def test_two_gloo_ranks_in_one_job_complete(project) -> None:
    plan, store, launcher = project
    import dataclasses

    tiny = plan.experiments["tiny"]
    exp = dataclasses.replace(tiny, config={**tiny.config, "distributed": {"processes": 2}})
    rec = launcher.start_new(plan, exp, seed=0)
    final = _settled(launcher, rec.run_id, {"completed", "failed", "lost", "stopped"}, timeout=240)
    assert final.status == "completed", final.error
    info = __import__("json").loads((Path(final.run_dir) / "run.json").read_text())
    assert "torch.distributed.run" in info["command"] and "2" in info["command"]
    assert _entries(plan, rec.run_id) == 1


def test_cli_submits_with_launcher_slurm_and_status_and_tui_show_the_job(project) -> None:
    from mdtui.views.dashboard import Dashboard

    plan, store, launcher = project
    toml = plan.settings.path
    runner = CliRunner()
    # the file says launcher = "slurm"; --launcher local would run here instead: slurm is the default
    added = runner.invoke(app, ["-f", str(toml), "queue", "add", "tiny", "--launcher", "slurm", "--json"])
    assert added.exit_code == 0, added.output
    rec = store.list_runs(experiment="tiny")[0]
    assert rec.job_id and str(rec.job_id) in added.output
    # `mdtui queue` said "0 entries ... add runs with `mdtui queue add`" right after this (issue #19)
    listed = runner.invoke(app, ["-f", str(toml), "queue"], env={"COLUMNS": "300"})
    assert "Slurm holds 1 run(s)" in listed.output and rec.run_id in listed.output, listed.output
    assert "nothing queued" not in listed.output
    wait_for(lambda: launcher.poll(rec.run_id) == "completed", timeout=180, interval=0.5)
    status = runner.invoke(app, ["-f", str(toml), "status"], env={"COLUMNS": "300"})
    assert f"Slurm job {rec.job_id}" in status.output, status.output
    dashboard = Dashboard(toml)
    rows = dashboard.refresh(with_devices=False).runs
    assert any(r.run_id == rec.run_id and r.devices == f"#{rec.job_id}" for r in rows)
    started, queued, errors = dashboard.start_now(["tiny"])  # the TUI's start: a job too
    assert len(started) == 1 and not queued and not errors
    assert store.get(started[0]).job_id
    bad = runner.invoke(app, ["-f", str(toml), "run", "tiny", "--launcher", "pbs"])
    assert bad.exit_code == 2 and "--launcher must be 'local' or 'slurm'" in bad.output, bad.output
    # what sbatch refuses is said as Slurm says it, and the run is not left waiting
    toml.write_text(
        toml.read_text().replace("signal_seconds = 50", 'signal_seconds = 50\npartition = "nope"')
    )
    refused = runner.invoke(app, ["-f", str(toml), "run", "tiny"])
    assert refused.exit_code == 1 and "sbatch refused the job" in refused.output
    assert "Invalid partition" in refused.output, refused.output
    assert store.list_runs(experiment="tiny")[0].status == "failed"


def test_run_in_the_foreground_follows_the_slurm_run_and_detach_returns_at_once(project) -> None:
    plan, store, launcher = project
    toml = str(plan.settings.path)
    runner = CliRunner()
    # it returned once submitted; now it follows the job as it does a local run, to its end
    out = runner.invoke(app, ["-f", toml, "run", "tiny"], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    rec = store.list_runs(experiment="tiny")[0]
    assert rec.status == "completed" and f"completed tiny run {rec.run_id}" in out.output, out.output
    assert _entries(plan, rec.run_id) == 1
    detached = runner.invoke(app, ["-f", toml, "run", "tiny", "--detach", "--json"])
    assert detached.exit_code == 0, detached.output
    assert {r.status for r in store.list_runs(experiment="tiny")} & {"queued", "starting", "running"}
    bad = runner.invoke(app, ["-f", toml, "run", "tiny", "--time", "soon"])
    assert bad.exit_code == 2 and "--time 'soon' is not a Slurm time limit" in bad.output, bad.output
