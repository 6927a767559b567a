"""mdtui/system/slurm.py without a cluster: parsing Slurm's output, one call per poll, failures named.

Fake `squeue`/`sinfo`/`scancel` scripts on PATH print what Slurm 22.05 prints (captured from the test
cluster, plus the GRES spellings of real GPU clusters) and record how they were called.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mdtui.system import slurm


def _fake(bin_dir: Path, name: str, stdout: str = "", stderr: str = "", rc: int = 0) -> Path:
    """A fake Slurm command that logs its arguments to ``name.calls`` and answers as given."""
    (bin_dir / f"{name}.out").write_text(stdout)
    (bin_dir / f"{name}.err").write_text(stderr)
    script = bin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{bin_dir}/{name}.calls"\n'
        f'cat "{bin_dir}/{name}.out"\ncat "{bin_dir}/{name}.err" >&2\nexit {rc}\n'
    )
    script.chmod(0o755)
    return bin_dir / f"{name}.calls"


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    return bin_dir


SQUEUE = (
    "7|COMPLETED|None|0|vm|0:12|1-00:00:00|0|mdtui:tiny:1|\n"
    "8|FAILED|NonZeroExitCode|768|vm|1:02:03|UNLIMITED|0|a|b|\n"
    "9|FAILED|JobLaunchFailure|9|vm|0:00|30:00|0|wrap|\n"
    "10|PENDING|Dependency|0||0:00|10|0|dep|\n"
    "11|RUNNING|None|0|n[01-02]|2-03:04:05|3-00:00:00|2|big|\n"
    "12_1|RUNNING|None|0|vm|0:01|5:00|0|array|\n"
)


def test_job_states_parses_every_field_in_one_call(fake_bin) -> None:
    calls = _fake(fake_bin, "squeue", SQUEUE)
    states = slurm.job_states(["7", "8", "9", "10", "11", "12"])
    assert len(calls.read_text().splitlines()) == 1  # one call, whatever the number of jobs
    assert "--jobs=7,8,9,10,11,12" in calls.read_text() and "--states=all" in calls.read_text()
    done, failed, killed, pending, running = (states[j] for j in ("7", "8", "9", "10", "11"))
    assert (done.state, done.exit_code, done.signal, done.elapsed_s, done.limit_s) == (
        "COMPLETED",
        0,
        None,
        12,
        86400,
    )
    assert done.finished and done.name == "mdtui:tiny:1" and done.reason is None
    # The raw wait status: exit 3 in the high byte; a name may hold the separator.
    assert (failed.exit_code, failed.signal, failed.limit_s, failed.name) == (3, None, None, "a|b")
    assert failed.elapsed_s == 3723
    assert (killed.exit_code, killed.signal, killed.limit_s) == (None, 9, 1800)
    assert (pending.state, pending.reason, pending.node, pending.exit_code) == (
        "PENDING",
        "Dependency",
        None,
        None,
    )
    assert pending.limit_s == 600 and not pending.finished
    assert (running.node, running.restarts, running.elapsed_s) == ("n[01-02]", 2, 2 * 86400 + 3 * 3600 + 245)
    assert "12" not in states  # an array member is not the job asked about


def test_job_states_of_forgotten_jobs_is_empty_not_an_error(fake_bin) -> None:
    _fake(fake_bin, "squeue", stderr="slurm_load_jobs error: Invalid job id specified\n", rc=1)
    assert slurm.job_states(["99"]) == {}
    assert slurm.job_states([]) == {}


def test_a_controller_that_does_not_answer_is_unavailable(fake_bin) -> None:
    _fake(
        fake_bin,
        "squeue",
        stderr="slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
        rc=1,
    )
    with pytest.raises(slurm.SlurmUnavailable, match="Unable to contact"):
        slurm.job_states(["1"])


def test_other_failures_name_the_command_and_its_error(fake_bin) -> None:
    _fake(fake_bin, "sbatch", stderr="sbatch: error: invalid partition specified: nope\n", rc=1)
    with pytest.raises(slurm.SlurmError, match="sbatch --parsable failed: .*invalid partition"):
        slurm.sbatch(Path("job.sbatch"))


def test_sbatch_returns_the_job_id_also_with_a_cluster_name(fake_bin) -> None:
    calls = _fake(fake_bin, "sbatch", "4242;gpu-cluster\n")
    assert slurm.sbatch(Path("/r/job.sbatch"), ["--hold"]) == "4242"
    assert calls.read_text().split() == ["--parsable", "--hold", "/r/job.sbatch"]


def test_missing_tools_and_a_missing_slurm_conf_are_unavailable_at_once(
    fake_bin, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("PATH", str(fake_bin))  # no Slurm at all
    with pytest.raises(slurm.SlurmUnavailable, match="not found"):
        slurm.partitions()
    assert not slurm.available()
    # The real clients retry a missing slurm.conf for 60 s before failing.
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "gone.conf"))
    with pytest.raises(slurm.SlurmUnavailable, match="gone.conf"):
        slurm.partitions()


def test_scancel_options_and_an_already_ended_job(fake_bin) -> None:
    calls = _fake(fake_bin, "scancel")
    assert slurm.scancel("5") is True
    assert slurm.scancel("5", signal="TERM", batch=True) is True
    assert slurm.scancel("5", signal="KILL", full=False) is True
    assert calls.read_text().splitlines() == ["--full 5", "--signal=TERM --batch 5", "--signal=KILL 5"]
    _fake(
        fake_bin,
        "scancel",
        stderr="scancel: error: Kill job error on job id 5: Invalid job id specified\n",
        rc=1,
    )
    assert slurm.scancel("5", signal="TERM") is False


SINFO = (
    "n1|gpu*|up|mixed|gpu:a100:4(S:0-1)|gpu:a100:3(IDX:0-2)|\n"
    "n2|gpu*|up|idle|gpu:a100:4(S:0-1)|gpu:a100:0(IDX:N/A)|\n"
    "n3|gpu*|up|down*|gpu:a100:4(S:0-1)|gpu:a100:0(IDX:N/A)|\n"
    "n4|gpu*|up|drained|gpu:a100:4|gpu:a100:0|\n"
    "n5|mixedgres|up|idle|gpu:v100:2,gpu:t4:1,shard:8|gpu:v100:1(IDX:0),gpu:t4:0(IDX:N/A)|\n"
    "c1|cpu|down|idle|(null)|gpu:0|\n"
)


def test_partitions_count_free_gpus_only_on_nodes_that_take_jobs(fake_bin) -> None:
    calls = _fake(fake_bin, "sinfo", SINFO)
    parts = {p.name: p for p in slurm.partitions()}
    assert len(calls.read_text().splitlines()) == 1
    gpu = parts["gpu"]
    assert (gpu.default, gpu.available, gpu.nodes, gpu.gpus_total, gpu.gpus_used) == (True, True, 4, 16, 3)
    # n1 has 1 free, n2 4; n3 does not answer and n4 is drained: their GPUs are not free for a run.
    assert gpu.gpus_free == 5
    assert gpu.states == {"mixed": 1, "idle": 1, "down*": 1, "drained": 1}
    assert (parts["mixedgres"].gpus_total, parts["mixedgres"].gpus_free) == (3, 2)
    cpu = parts["cpu"]
    assert (cpu.default, cpu.available, cpu.gpus_total, cpu.gpus_free) == (False, False, 0, 0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0:00", 0),
        ("5", 300),
        ("1:30", 90),
        ("2:00:01", 7201),
        ("1-00:00:00", 86400),
        ("3-04", 3 * 86400 + 4 * 3600),
        ("UNLIMITED", None),
        ("INVALID", None),
        ("N/A", None),
        ("", None),
    ],
)
def test_durations(text, seconds) -> None:
    assert slurm.parse_duration(text) == seconds


def test_mdtui_gpus_without_a_reachable_slurm_says_so_and_exits_2(fake_bin, monkeypatch) -> None:
    from typer.testing import CliRunner

    from mdtui.cli import app

    monkeypatch.setenv("PATH", str(fake_bin))  # no sinfo here
    result = CliRunner().invoke(app, ["gpus", "--launcher", "slurm"], catch_exceptions=False)
    assert result.exit_code == 2
    # the backend is refused before any query (backends.backend_for: no Slurm commands here)
    assert "sbatch is not on PATH" in result.output and "--launcher local" in result.output
    bad = CliRunner().invoke(app, ["gpus", "--launcher", "pbs"], catch_exceptions=False)
    assert bad.exit_code == 2 and "must be 'local' or 'slurm', not 'pbs'" in bad.output


def test_a_huge_poll_is_split_to_stay_under_the_argument_limit(fake_bin, monkeypatch) -> None:
    calls = _fake(fake_bin, "squeue", "")
    monkeypatch.setattr(slurm, "MAX_IDS_PER_CALL", 4)
    assert slurm.job_states([str(i) for i in range(10)]) == {}
    assert len(calls.read_text().splitlines()) == 3
