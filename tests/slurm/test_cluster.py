"""The test cluster (tests/slurm/cluster.sh) and mdtui/system/slurm.py against it: what Slurm really does.

These pin the behaviour the Slurm launcher relies on: GPU jobs schedule on fake GRES and get
CUDA_VISIBLE_DEVICES, finished jobs stay readable (MinJobAge), the time-limit warning signal reaches
the batch shell, requeue restarts a running job with SLURM_RESTART_COUNT, a DOWN node requeues or
fails its jobs, and one squeue call answers for many jobs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mdtui.system import slurm as slurm_cli
from tests.conftest import wait_for


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def test_gpu_job_completes_gets_its_devices_and_stays_readable(slurm, tmp_path) -> None:
    out = tmp_path / "cvd.txt"
    job = slurm.submit_and_wait(["--gres=gpu:2"], wrap=f"echo $CUDA_VISIBLE_DEVICES > {out}")
    assert job.state == "COMPLETED" and job.exit_code == 0 and job.signal is None
    assert job.node == slurm.node and job.reason is None
    # Slurm hands out two of the node's four fake devices as CUDA indices.
    devices = out.read_text().strip().split(",")
    assert len(devices) == 2 and set(devices) <= {"0", "1", "2", "3"}
    # Gone from squeue's default view, still known to the controller (MinJobAge): end states are readable.
    plain = subprocess.run(["squeue", "-h", "-j", job.job_id, "-o", "%i"], capture_output=True, text=True)
    assert plain.stdout.strip() == ""
    assert slurm.job(job.job_id).state == "COMPLETED"


def test_failed_job_reports_its_exit_code_and_signal(slurm) -> None:
    failed = slurm.submit_and_wait(wrap="exit 3")
    assert (failed.state, failed.reason, failed.exit_code) == ("FAILED", "NonZeroExitCode", 3)
    killed = slurm.submit_and_wait(wrap="kill -KILL $$")
    assert killed.state == "FAILED" and killed.signal == 9 and killed.exit_code is None


def test_one_call_answers_for_many_jobs_and_leaves_out_unknown_ones(slurm) -> None:
    done = slurm.submit_and_wait(wrap="true")
    held = slurm.sbatch(["--hold"], wrap="true")
    states = slurm_cli.job_states([done.job_id, held, "999999"])
    assert set(states) == {done.job_id, held}
    assert states[held].state == "PENDING" and states[held].reason == "JobHeldUser"
    assert states[held].node is None
    assert slurm_cli.job_states(["999999"]) == {} and slurm_cli.job_states([]) == {}


def test_time_limit_warning_signal_reaches_the_batch_shell_before_the_limit(slurm, tmp_path) -> None:
    log = tmp_path / "signal.txt"
    script = _script(
        tmp_path / "warned.sh",
        f"trap 'echo TERM at $SECONDS >> {log}; exit 0' TERM\necho started >> {log}\n"
        "while true; do sleep 0.2; done\n",
    )
    # A one-minute limit and a warning 55 s before it: the signal comes at ~5 s (+ the controller's
    # check period), never before the trap is set.
    job = slurm.submit_and_wait(["--time=1", "--signal=B:TERM@55"], script=script, timeout=75)
    assert job.state == "COMPLETED", job
    assert job.limit_s == 60 and job.elapsed_s is not None and job.elapsed_s < 60
    lines = log.read_text().splitlines()
    assert lines[0] == "started" and lines[1].startswith("TERM at ")


def test_requeue_restarts_a_running_job_with_its_restart_count(slurm, tmp_path) -> None:
    log = tmp_path / "restarts.txt"
    script = _script(
        tmp_path / "requeued.sh",
        f'echo "${{SLURM_RESTART_COUNT:-0}}" >> {log}\n'
        '[ "${SLURM_RESTART_COUNT:-0}" -ge 1 ] && exit 0\nsleep 120\n',
    )
    job_id = slurm.sbatch(script=script)
    slurm.wait_for_job_state(job_id, {"RUNNING"})
    wait_for(lambda: log.exists() and log.read_text().strip() == "0")
    slurm_cli.requeue(job_id)
    # Held until its launch credential expires (cred_expire=10), then run again from the top.
    job = slurm.wait_for_job_state(job_id, {"COMPLETED"}, timeout=60)
    assert job.restarts == 1
    assert log.read_text().split() == ["0", "1"]


def test_node_down_requeues_requeueable_jobs_and_fails_the_others(slurm) -> None:
    requeueable = slurm.sbatch(["--requeue"], wrap="sleep 300")
    not_requeueable = slurm.sbatch(["--no-requeue"], wrap="sleep 300")
    for job_id in (requeueable, not_requeueable):
        slurm.wait_for_job_state(job_id, {"RUNNING"})
    slurm.node_down("mdtui test")
    assert slurm.node_state().startswith("down")
    failed = slurm.wait_for_job_state(not_requeueable, {"NODE_FAIL"})
    assert failed.reason == "NodeDown"
    back = slurm.wait_for_job_state(requeueable, {"PENDING"})
    assert back.restarts == 1
    (part,) = [p for p in slurm_cli.partitions() if p.name == "debug"]
    assert part.gpus_free == 0 and part.states == {"down": 1}
    slurm.node_up()
    # Requeued, it runs again on the node once its credential has expired.
    slurm.wait_for_job_state(requeueable, {"RUNNING"}, timeout=60)


def test_partitions_count_free_gpus_from_one_sinfo_call(slurm) -> None:
    (idle,) = [p for p in slurm_cli.partitions() if p.name == "debug"]
    assert (idle.default, idle.available, idle.nodes, idle.gpus_total) == (True, True, 1, 4)
    job_id = slurm.sbatch(["--gres=gpu:3"], wrap="sleep 300")
    slurm.wait_for_job_state(job_id, {"RUNNING"})
    (busy,) = [p for p in slurm_cli.partitions() if p.name == "debug"]
    assert (busy.gpus_used, busy.gpus_free) == (3, 1)


def test_scancel_signals_a_running_job_and_says_when_it_had_already_ended(slurm, tmp_path) -> None:
    log = tmp_path / "stopped.txt"
    ready = tmp_path / "ready"
    script = _script(
        tmp_path / "stoppable.sh",
        f"trap 'echo TERM >> {log}; exit 0' TERM\ntouch {ready}\nwhile true; do sleep 0.2; done\n",
    )
    job_id = slurm.sbatch(script=script)
    # RUNNING is the controller's word as soon as it allocates: the shell may not have set its trap yet.
    wait_for(ready.exists)
    assert slurm_cli.scancel(job_id, signal="TERM", batch=True) is True
    assert slurm.wait_for_job_state(job_id, {"COMPLETED"}).exit_code == 0
    assert log.read_text().split() == ["TERM"]
    assert slurm_cli.scancel(job_id, signal="TERM") is False


def test_mdtui_gpus_shows_the_partitions_free_gpus_when_the_launcher_is_slurm(slurm, tiny_toml) -> None:
    from typer.testing import CliRunner

    from mdtui.cli import app

    tiny_toml.write_text(tiny_toml.read_text().replace("[settings]\n", '[settings]\nlauncher = "slurm"\n', 1))
    job_id = slurm.sbatch(["--gres=gpu:1"], wrap="sleep 300")
    slurm.wait_for_job_state(job_id, {"RUNNING"})
    result = CliRunner().invoke(app, ["-f", str(tiny_toml), "gpus", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (debug,) = [p for p in data["partitions"] if p["name"] == "debug"]
    assert (
        data["launcher"],
        debug["default"],
        debug["gpus_total"],
        debug["gpus_used"],
        debug["gpus_free"],
    ) == (
        "slurm",
        True,
        4,
        1,
        3,
    )
    table = CliRunner().invoke(app, ["-f", str(tiny_toml), "gpus"], catch_exceptions=False)
    assert table.exit_code == 0 and "debug (default)" in table.output and "free for a run" in table.output
