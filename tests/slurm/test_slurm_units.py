"""The Slurm launcher's pure parts, without a cluster: settings, the job script, the state mapping,
the supervisor's reading of a SIGTERM inside a job."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdtui.execution import slurm_job
from mdtui.execution.ending import Ending, EngineEnd, SlurmEnd, decide
from mdtui.execution.slurm import JobSpec, job_script
from mdtui.execution.slurm_status import describe
from mdtui.registry.slurm_options import SlurmOptions
from mdtui.runs.status import RunStatus
from mdtui.system.slurm import parse_duration
from tests.conftest import TINY_TOML, controller_down


@dataclass(frozen=True)
class Job:
    state: str
    reason: str | None = None
    node: str | None = "n1"
    elapsed_s: int | None = None
    limit_s: int | None = None
    exit_code: int | None = None


def _plan(tmp_path: Path, extra: str):
    from mdtui.registry.plan import load_plan

    path = tmp_path / "experiments.toml"
    path.write_text(TINY_TOML.replace("[defaults]\n", extra + "\n[defaults]\n", 1), encoding="utf-8")
    return load_plan(path)


def test_settings_slurm_table_and_experiment_override_merge(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        'launcher = "slurm"\n[settings.slurm]\npartition = "gpu"\ntime = "2:00:00"\ncpus_per_gpu = 4\n'
        'setup = ["module load cuda"]\nextra = ["--exclusive"]\n',
    )
    assert plan.settings.launcher == "slurm"
    opts = plan.settings.slurm
    assert (opts.partition, opts.time, opts.cpus_per_gpu, opts.setup) == (
        "gpu",
        "2:00:00",
        4,
        ("module load cuda",),
    )
    merged = opts.merged({"time": "30", "cpus_per_task": 2, "mem": "8G"})
    assert (merged.partition, merged.time, merged.cpus_per_task, merged.cpus_per_gpu) == (
        "gpu",
        "30",
        2,
        None,
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('launcher = "pbs"\n', 'key settings.launcher: expected "local" or "slurm"'),
        (
            '[settings.slurm]\npartiton = "gpu"\n',
            'key settings.slurm.partiton: unknown Slurm option "partiton"',
        ),
        ('[settings.slurm]\ntime = "soon"\n', "key settings.slurm.time: expected a Slurm time limit"),
        (
            '[settings.slurm]\nextra = ["exclusive"]\n',
            "key settings.slurm.extra: expected a list of sbatch options",
        ),
        (
            "[settings.slurm]\ncpus_per_gpu = 2\ncpus_per_task = 2\n",
            "set either cpus_per_gpu or cpus_per_task",
        ),
    ],
)
def test_bad_slurm_settings_are_reported_with_file_line_and_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    from mdtui.registry.spec import ExperimentsError

    with pytest.raises(ExperimentsError) as err:
        _plan(tmp_path, toml)
    text = str(err.value)
    assert expected in text
    assert "experiments.toml:" in text and ":0:" not in text  # a real line number


def test_experiment_slurm_and_nodes_are_validated(tmp_path: Path) -> None:
    from mdtui.registry.plan import load_plan
    from mdtui.registry.spec import ExperimentsError

    path = tmp_path / "experiments.toml"
    path.write_text(TINY_TOML + '\n[experiment.big]\nnodes = 0\nslurm = { mem = "lots" }\n', encoding="utf-8")
    with pytest.raises(ExperimentsError) as err:
        load_plan(path)
    assert 'experiment "big", key nodes: expected an integer >= 1' in str(err.value)
    assert 'experiment "big", key slurm: slurm.mem: expected a memory size' in str(err.value)
    path.write_text(
        TINY_TOML + "\n[experiment.big]\nnodes = 2\nslurm = { time = 90, mem = 4000 }\n", encoding="utf-8"
    )
    big = load_plan(path).experiments["big"]
    assert (big.nodes, big.slurm) == (2, {"time": "90", "mem": "4000M"})


def test_time_values_read_as_slurm_reads_them() -> None:
    assert parse_duration("90") == 90 * 60
    assert parse_duration("59:58") == 59 * 60 + 58
    assert parse_duration("2:00:00") == 7200
    assert parse_duration("1-00") == 86400
    assert parse_duration("1-02:03:04") == 86400 + 7384
    assert parse_duration("UNLIMITED") is None


def test_job_script_carries_every_option_and_runs_the_supervisor(tmp_path: Path) -> None:
    opts = SlurmOptions(
        partition="gpu",
        account="lab",
        qos="high",
        time="1:00:00",
        cpus_per_gpu=4,
        mem="32G",
        constraint="a100",
        extra=("--exclusive",),
        setup=("module load cuda", "source /opt/venv/bin/activate"),
        signal_seconds=120,
        python="python3",
    )
    spec = JobSpec(
        run_dir=tmp_path / "run x",
        job_name="mdtui:a:1",
        options=opts,
        gpus=2,
        dependency=("41", "42"),
        workdir=tmp_path,
        grace=15,
    )
    script = job_script(spec)
    for line in (
        "#SBATCH --gres=gpu:2",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --time=1:00:00",
        "#SBATCH --cpus-per-gpu=4",
        "#SBATCH --mem=32G",
        "#SBATCH --constraint=a100",
        "#SBATCH --exclusive",
        "#SBATCH --signal=B:TERM@120",
        "#SBATCH --requeue",
        "#SBATCH --dependency=afterok:41:42",
        f"#SBATCH '--output={tmp_path}/run x/slurm-%j.out'",
        "module load cuda",
        "export MDTUI_SLURM=1",
        "export MDTUI_SLURM_LIMIT=3600",
        "export MDTUI_STOP_GRACE=15",
    ):
        assert line in script, line
    assert script.rstrip().endswith(f"exec python3 -m mdtui.execution.supervise '{tmp_path}/run x'")
    assert script.index("module load cuda") < script.index("exec python3")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid shell


def test_multi_node_script_runs_torchrun_per_node_through_srun(tmp_path: Path) -> None:
    spec = JobSpec(run_dir=tmp_path, job_name="j", options=SlurmOptions(), gpus=4, nodes=2)
    script = job_script(spec)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    # each node's torchrun goes through slurm_job's helper, which names its routable address
    assert (
        f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 {sys.executable} -m mdtui.execution.slurm_job "
        "torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d" in script
    )
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # the supervisor on the first node runs exactly that line (not its own one-node torchrun)
    line = next(ln for ln in script.splitlines() if ln.startswith("export MDTUI_SLURM_ENGINE="))
    value = line.split("=", 1)[1].strip('"').replace("$SLURM_JOB_ID", "7")
    env = {"MDTUI_SLURM": "1", "SLURM_JOB_ID": "7", "MDTUI_SLURM_ENGINE": value}
    cmd = slurm_job.multi_node_command(tmp_path, resume=True, env=env)
    assert cmd[:2] == ["srun", "--kill-on-bad-exit=1"] and cmd[-2:] == [str(tmp_path), "--resume"]
    assert slurm_job.multi_node_command(tmp_path, resume=False, env={"MDTUI_SLURM": "1"}) is None


def test_each_node_names_its_routable_address_and_loopback_is_refused_before_training() -> None:
    env = {"SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1", "SLURMD_NODENAME": "n01", "SLURM_JOB_ID": "7"}
    # the first node on loopback: ranks elsewhere could not reach it (they used to hang silently)
    with pytest.raises(slurm_job.NoRoute, match="n01 .*loopback"):
        slurm_job.rendezvous(env)
    with pytest.raises(slurm_job.NoRoute, match="srun"):
        slurm_job.rendezvous({"SLURMD_NODENAME": "n01"})
    # a routable first node: this node's own address towards it, and a port per job
    mine = slurm_job.routable_address("192.0.2.1") if _has_route("192.0.2.1") else None
    if mine is not None:
        env["SLURM_LAUNCH_NODE_IPADDR"] = "192.0.2.1"
        addr, endpoint = slurm_job.rendezvous(env)
        assert addr == mine and endpoint == f"192.0.2.1:{slurm_job.RDZV_BASE_PORT + 7}"
        cmd = slurm_job.torchrun_command(["--nnodes=2", "-m", "engine"], env)
        assert cmd[1:3] == ["-m", "torch.distributed.run"] and f"--local-addr={mine}" in cmd
        assert f"--rdzv-conf=is_host={int(mine == '192.0.2.1')}" in cmd and cmd[-1] == "engine"
    assert slurm_job.is_loopback("127.0.1.1") and slurm_job.is_loopback("::1")
    assert not slurm_job.is_loopback("10.0.0.2")


def _has_route(peer: str) -> bool:
    try:
        slurm_job.routable_address(peer)
    except OSError:
        return False
    return True


def test_the_job_of_a_completed_run_refuses_to_train_it_again(tmp_path: Path) -> None:
    script = job_script(JobSpec(run_dir=tmp_path, job_name="j", options=SlurmOptions()))
    # by default the interpreter mdtui runs under (a venv works without activating it)
    assert f"{sys.executable} -m mdtui.execution.slurm_job guard {tmp_path}" in script
    assert script.index("slurm_job guard") < script.index("-m mdtui.execution.supervise")
    guard = [sys.executable, "-m", "mdtui.execution.slurm_job", "guard", str(tmp_path)]
    assert subprocess.run(guard, capture_output=True).returncode == 0  # never ran: train it
    (tmp_path / "exit.json").write_text(json.dumps({"status": "stopped"}))
    assert subprocess.run(guard, capture_output=True).returncode == 0  # stopped: resume it
    (tmp_path / "exit.json").write_text(json.dumps({"status": "completed"}))
    refused = subprocess.run(guard, capture_output=True, text=True)
    assert refused.returncode == slurm_job.GUARD_EXIT
    assert "already completed" in refused.stderr and "best.pt" in refused.stderr


def _end(**kw) -> EngineEnd:
    return EngineEnd(supervisor_vanished=True, **kw)


@pytest.mark.parametrize(
    ("job", "end", "started", "status", "words"),
    [
        (Job("CANCELLED"), _end(stop_requested=True), False, RunStatus.CANCELLED, "before it started"),
        # cancelled from outside before it started: like mdtui's stop of a pending job (issue #19)
        (Job("CANCELLED"), _end(), False, RunStatus.CANCELLED, "outside mdtui"),
        (Job("CANCELLED"), _end(stop_requested=True), True, RunStatus.STOPPED, "cancelled by mdtui"),
        (Job("CANCELLED"), _end(event_status="stopped"), True, RunStatus.FAILED, "outside mdtui"),
        (Job("FAILED"), _end(stop_requested=True), True, RunStatus.STOPPED, "scancel --signal=KILL"),
        (Job("TIMEOUT"), _end(), True, RunStatus.STOPPED, "time limit"),
        (Job("NODE_FAIL", node="n7"), _end(), True, RunStatus.LOST, "node n7 failed (NODE_FAIL)"),
        (Job("PREEMPTED"), _end(), True, RunStatus.LOST, "PREEMPTED"),
        (Job("OUT_OF_MEMORY"), _end(), True, RunStatus.FAILED, "OUT_OF_MEMORY"),
        (Job("COMPLETED"), _end(event_status="completed"), True, RunStatus.COMPLETED, None),
        (
            Job("FAILED", "NonZeroExitCode", exit_code=1),
            _end(),
            True,
            RunStatus.LOST,
            "FAILED (NonZeroExitCode)",
        ),
        (None, _end(), True, RunStatus.LOST, "no longer knows job 7"),
    ],
)
def test_slurm_end_states_map_honestly(job, end, started, status, words) -> None:
    said = SlurmEnd(
        job_id="7",
        state=job.state if job else None,
        reason=job.reason if job else None,
        node=job.node if job else None,
        exit_code=job.exit_code if job else None,
        started=started,
    )
    ending = decide(dataclasses.replace(end, slurm=said))  # one decision, Slurm's word as input
    assert ending.status == status
    if words:
        assert words in (ending.error or "")


def test_describe_says_state_reason_node_and_time() -> None:
    assert describe(Job("PENDING", "Priority")) == "PENDING (Priority)"
    # units spelled out: "0:00 of 0:20" read as seconds
    assert describe(Job("RUNNING", node="n3", elapsed_s=724, limit_s=7200)) == "RUNNING on n3, 12m of 2h00m"
    assert describe(Job("RUNNING", node="n3", elapsed_s=5, limit_s=1200)) == "RUNNING on n3, 0m of 20m"
    assert describe(Job("RUNNING", node="n3", elapsed_s=90061, limit_s=None)) == "RUNNING on n3, 1d 1h01m"


def test_a_term_near_the_time_limit_is_the_warning_else_someone_elses_scancel() -> None:
    env = {"MDTUI_SLURM_STARTED": "1000", "MDTUI_SLURM_LEFT": "10:00", "MDTUI_SLURM_SIGNAL": "120"}
    assert slurm_job.term_origin(now=1000 + 600 - 120, env=env) == slurm_job.BY_TIME_LIMIT
    assert slurm_job.term_origin(now=1000 + 60, env=env) == slurm_job.BY_SLURM
    assert (
        slurm_job.term_origin(now=10**9, env={**env, "MDTUI_SLURM_LEFT": "UNLIMITED"}) == slurm_job.BY_SLURM
    )
    # the supervisor's stop request names who sent the signal; decide reads it
    stopped = EngineEnd(event_status="stopped", exit_code=0, stop_requested=True)
    by = slurm_job.term_by
    assert (
        decide(dataclasses.replace(stopped, term_by=by({"by": slurm_job.BY_TIME_LIMIT}))).error
        == "time limit"
    )
    cancelled = decide(dataclasses.replace(stopped, term_by=by({"by": slurm_job.BY_SLURM})))
    assert cancelled.status == RunStatus.FAILED and "cancelled outside mdtui" in cancelled.error
    assert decide(dataclasses.replace(stopped, term_by=by({"by_pid": 1}))) == Ending(RunStatus.STOPPED)


def test_inside_a_job_the_granted_gpus_are_kept() -> None:
    assert slurm_job.granted_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert slurm_job.granted_devices({"CUDA_VISIBLE_DEVICES": "GPU-ab12"}) == ["GPU-ab12"]
    assert slurm_job.granted_devices({}) == ["cpu"]
    assert slurm_job.active({"MDTUI_SLURM": "1", "SLURM_JOB_ID": "5"})
    assert not slurm_job.active({"SLURM_JOB_ID": "5"})  # an salloc shell running mdtui locally


def test_the_slurm_docs_example_is_a_valid_experiments_file(tmp_path: Path) -> None:
    from mdtui.registry.plan import load_plan

    page = (Path(__file__).resolve().parents[2] / "docs" / "slurm.md").read_text(encoding="utf-8")
    section = page.split("## On a Slurm cluster", 1)[1]
    toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "experiments.toml").write_text(toml, encoding="utf-8")
    plan = load_plan(tmp_path / "experiments.toml")
    big = plan.experiments["r32-big"]
    assert (plan.settings.launcher, big.gpus, big.nodes, big.slurm) == ("slurm", 4, 2, {"time": "2-00:00:00"})
    assert plan.settings.slurm.merged(big.slurm).partition == "gpu"


def _slurm_run(store, plan, job_id: str, status: str = "queued"):
    from mdtui.runs.prepare import create_run_for

    rec = create_run_for(plan, store, plan.experiments["tiny"], seed=0, devices=["0"])
    store.update(rec.run_id, status=status, job_id=job_id, job_state="PENDING")
    return rec


def test_reconcile_asks_slurm_once_and_never_reads_node_pids(tiny_plan, store, monkeypatch) -> None:
    from mdtui.execution import ledger
    from mdtui.execution import slurm_status as slurm
    from mdtui.execution.reconcile import reconcile

    calls: list[list[str]] = []
    jobs = {"11": Job("PENDING", "Priority"), "12": Job("PENDING", "DependencyNeverSatisfied")}

    def job_states(ids):
        calls.append(sorted(ids))
        return {i: jobs[i] for i in ids if i in jobs}

    monkeypatch.setattr(slurm.slurm_cli, "job_states", job_states)
    waiting = _slurm_run(store, tiny_plan, "11")
    held = _slurm_run(store, tiny_plan, "12")
    gone = _slurm_run(store, tiny_plan, "13")
    # a supervisor on a node records its pid there: here that pid means nothing and must not be read
    running = _slurm_run(store, tiny_plan, "14", status="running")
    store.update(running.run_id, supervisor_pid=999_999, supervisor_start=1.0, boot_id="another-host")
    jobs["14"] = Job("RUNNING", node="n2", elapsed_s=5)
    reconcile(store)
    assert calls == [["11", "12", "13", "14"]]  # one query for every Slurm run
    assert store.get(waiting.run_id).job_state == "PENDING (Priority)"
    assert store.get(held.run_id).status == "blocked"
    assert "DependencyNeverSatisfied" in store.get(held.run_id).error
    lost = store.get(gone.run_id)
    assert lost.status == "lost" and "no longer knows job 13" in lost.error
    assert (Path(lost.run_dir) / "exit.json").is_file()
    assert store.get(running.run_id).status == "running"
    assert store.get(running.run_id).job_state == "RUNNING on n2, 0m"
    # the local ledger: a Slurm run holds nothing of this machine's devices
    assert all(r.run_id != running.run_id for r in ledger.reservations(store))


def test_a_run_that_ended_before_its_job_shows_slurm_s_final_word(tiny_plan, store, monkeypatch) -> None:
    """The supervisor ends the run while its job is still RUNNING: the index must not go on saying
    "RUNNING on n1" for a finished run. The job alone is shown until a poll reads Slurm's end state."""
    import time

    from mdtui.execution import slurm_status as slurm
    from mdtui.execution.reconcile import reconcile

    jobs = {"21": Job("RUNNING", node="n1", elapsed_s=30)}
    monkeypatch.setattr(slurm.slurm_cli, "job_states", lambda ids: {i: jobs[i] for i in ids if i in jobs})
    rec = _slurm_run(store, tiny_plan, "21", status="running")
    store.update(rec.run_id, job_state="RUNNING on n1, 0:30")
    assert store.get(rec.run_id).slurm_line == "Slurm job 21: RUNNING on n1, 0:30"
    store.update(rec.run_id, status="completed", ended_t=time.time())
    assert store.get(rec.run_id).slurm_line == "Slurm job 21"  # a live state is not shown for an ended run
    reconcile(store)  # the job is still running a moment longer: nothing new to say
    assert store.get(rec.run_id).slurm_line == "Slurm job 21"
    jobs["21"] = Job("COMPLETED", node="n1", elapsed_s=90)
    reconcile(store)
    assert store.get(rec.run_id).status == "completed"
    assert store.get(rec.run_id).slurm_line == "Slurm job 21: COMPLETED on n1, 1m"


def test_a_requeued_job_is_a_new_attempt_with_slurm_s_current_reason(tiny_plan, store, monkeypatch) -> None:
    """A node failed under a running run, and its supervisor never wrote an ending: Slurm has the job
    pending again. The run is queued (not "running" for good), the dead attempt's pids are gone, and
    the note follows Slurm's reason at every poll (it stayed frozen)."""
    from mdtui.execution import slurm_status as slurm
    from mdtui.execution.reconcile import reconcile

    jobs = {"31": Job("PENDING", "BeginTime")}
    monkeypatch.setattr(slurm.slurm_cli, "job_states", lambda ids: {i: jobs[i] for i in ids if i in jobs})
    rec = _slurm_run(store, tiny_plan, "31", status="running")
    store.update(rec.run_id, supervisor_pid=999_999, pid=999_998, job_state="RUNNING on n1, 3m")
    reconcile(store)
    now = store.get(rec.run_id)
    assert now.status == "queued" and now.supervisor_pid is None and now.pid is None
    assert now.error == "requeued by Slurm; waiting for BeginTime" and now.job_state == "PENDING (BeginTime)"
    jobs["31"] = Job("PENDING", "Priority")
    reconcile(store)
    assert store.get(rec.run_id).error == "requeued by Slurm; waiting for Priority"
    jobs["31"] = Job("RUNNING", node="n2", elapsed_s=1)
    reconcile(store)
    assert store.get(rec.run_id).status == "starting" and store.get(rec.run_id).error is None


def test_an_unreachable_controller_is_said_with_the_last_known_state(tiny_plan, store, monkeypatch) -> None:
    from mdtui.execution import slurm_status as slurm
    from mdtui.execution.reconcile import reconcile

    controller_down(monkeypatch)
    rec = _slurm_run(store, tiny_plan, "41", status="running")
    store.update(rec.run_id, job_state="RUNNING on n1, 3m")
    reconcile(store)
    line = store.get(rec.run_id).slurm_line
    assert store.get(rec.run_id).status == "running"  # its last known state, said to be that
    assert line.startswith("Slurm job 41: Slurm unreachable — last known state at ") and line.endswith(
        ": RUNNING on n1, 3m"
    ), line
    reconcile(store)
    assert store.get(rec.run_id).slurm_line == line  # the time it was last known stays
    monkeypatch.setattr(
        slurm.slurm_cli, "job_states", lambda ids: {"41": Job("RUNNING", node="n1", elapsed_s=240)}
    )
    reconcile(store)
    assert store.get(rec.run_id).slurm_line == "Slurm job 41: RUNNING on n1, 4m"


def test_the_squeue_of_a_poll_gives_up_quickly(monkeypatch) -> None:
    """A controller that does not answer: one short try per poll (squeue retried for ~12 s)."""
    from mdtui.system import slurm as slurm_cli

    seen = {}

    def fake_run(cmd, **kw):
        seen["timeout"] = kw.get("timeout")
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setenv("SLURM_CONF", __file__)  # any existing file
    monkeypatch.setattr(slurm_cli.subprocess, "run", fake_run)
    with pytest.raises(slurm_cli.SlurmUnavailable, match="did not answer in 2.5 s"):
        slurm_cli.job_states(["1"])
    assert seen["timeout"] == slurm_cli.QUERY_TIMEOUT_S <= 2.5


def test_validate_warns_when_the_time_limit_leaves_no_time_before_the_warning(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mdtui.cli import app

    path = tmp_path / "experiments.toml"
    # 1 minute with the default signal_seconds = 120: the warning came 3 s after the start (issue #19)
    path.write_text(
        TINY_TOML.replace("[defaults]\n", "[settings.slurm]\ntime = 1\n\n[defaults]\n", 1)
        + '\n[experiment.roomy]\ngroup = "g"\nslurm = { time = "0:10:00" }\n',
        encoding="utf-8",
    )
    out = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert "warning [settings.slurm]: time = '1' (60 s) with signal_seconds = 120" in out.output
    assert "at least 180 s" in out.output and "roomy" not in out.output
    path.write_text(
        TINY_TOML + '\n[experiment.short]\ngroup = "g"\nslurm = { time = "2:30", signal_seconds = 100 }\n',
        encoding="utf-8",
    )
    out = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "400"})
    assert out.exit_code == 0 and 'warning experiment "short", key slurm: time' in out.output, out.output
    assert "at least 160 s" in out.output


def test_a_stopped_slurm_run_says_why_and_not_slurm_s_failed(tiny_plan, store, monkeypatch) -> None:
    """A stopped run's note read "Slurm job 2: FAILED" (its batch shell exits 1), and its reason
    "time limit" was not shown in `mdtui status` (issue #19)."""
    import time

    from typer.testing import CliRunner

    from mdtui.cli import app
    from mdtui.execution import slurm_status

    monkeypatch.setattr(slurm_status.slurm_cli, "job_states", lambda ids: {})
    rec = _slurm_run(store, tiny_plan, "2", status="stopped")
    store.update(rec.run_id, job_state="FAILED on n1, 1m", error="time limit", ended_t=time.time())
    assert store.get(rec.run_id).slurm_line == "Slurm job 2"
    out = CliRunner().invoke(app, ["-f", str(tiny_plan.settings.path), "status"], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    assert "Slurm job 2; time limit" in out.output and "FAILED" not in out.output, out.output


@pytest.mark.parametrize("fact", ["node_wrote_run_json", "events", "supervisor_log"])
def test_a_job_that_started_and_died_between_two_polls_did_start(tiny_plan, store, monkeypatch, fact) -> None:
    """The index never saw the attempt alive (no supervisor pid: only a poll that sees it adopts it)
    and no exit.json was written; whether it started is read from what survives it in its run
    directory. A run that started is never "cancelled ... before it started"."""
    from mdtui.execution import slurm_status as slurm
    from mdtui.execution.node_store import NODE_KEY
    from mdtui.execution.reconcile import reconcile
    from mdtui.system.fs import atomic_write_json, read_json

    rec = _slurm_run(store, tiny_plan, "51")
    run_dir = Path(rec.run_dir)
    if fact == "node_wrote_run_json":
        info = read_json(run_dir / "run.json")
        atomic_write_json(run_dir / "run.json", {**info, NODE_KEY: {"attempt": "51:0", "status": "running"}})
    elif fact == "events":
        (run_dir / "events.jsonl").write_text('{"event": "run_started"}\n', encoding="utf-8")
    else:
        (run_dir / "stderr.log").write_text("[mdtui-supervisor] starting torchrun\n", encoding="utf-8")
    # as Slurm says it of a job that ran for under a second: TimeUsed 0:00
    jobs = {"51": Job("CANCELLED", node="n1", elapsed_s=0)}
    monkeypatch.setattr(slurm.slurm_cli, "job_states", lambda ids: {i: jobs[i] for i in ids if i in jobs})
    reconcile(store)
    final = store.get(rec.run_id)
    assert final.status == "failed" and "cancelled outside mdtui (scancel" in final.error, final.error
    assert "before it started" not in final.error
    assert json.loads((run_dir / "exit.json").read_text(encoding="utf-8")).get("never_started") is not True


def test_a_batch_script_that_failed_before_the_supervisor_is_a_run_that_never_started(
    tiny_plan, store, monkeypatch
) -> None:
    """Slurm ran the script (its slurm-<id>.err exists) but the supervisor never recorded itself
    (an interpreter missing on the node): the run did not start, and the reason points at the log."""
    from mdtui.execution import slurm_status as slurm
    from mdtui.execution.reconcile import reconcile

    rec = _slurm_run(store, tiny_plan, "53")
    (Path(rec.run_dir) / "slurm-53.err").write_text("python: not found\n", encoding="utf-8")
    monkeypatch.setattr(
        slurm.slurm_cli,
        "job_states",
        lambda ids: {"53": Job("FAILED", node="n1", elapsed_s=0, exit_code=127)},
    )
    reconcile(store)
    final = store.get(rec.run_id)
    assert final.status == "failed" and "before the run started; see 53's slurm-*.err" in final.error


def test_a_job_cancelled_while_pending_never_started(tiny_plan, store, monkeypatch) -> None:
    """The counterpart: nothing in the run directory, no time used: it never started."""
    from mdtui.execution import slurm_status as slurm
    from mdtui.execution.reconcile import reconcile

    rec = _slurm_run(store, tiny_plan, "52")
    monkeypatch.setattr(
        slurm.slurm_cli, "job_states", lambda ids: {"52": Job("CANCELLED", node=None, elapsed_s=0)}
    )
    reconcile(store)
    final = store.get(rec.run_id)
    assert final.status == "cancelled" and "before it started" in final.error, final.error


def test_stop_of_a_pending_job_with_slurm_unreachable_says_the_request_waits(
    tiny_plan, store, monkeypatch
) -> None:
    """Controller down, job pending: nothing could be cancelled, but the stop request is kept and
    applies if the job starts. It said "has no live process to signal"."""
    from typer.testing import CliRunner

    from mdtui.cli import app
    from mdtui.execution.ending import STOP_REQUEST
    from mdtui.system import slurm as slurm_cli

    controller_down(monkeypatch)
    monkeypatch.setattr(slurm_cli, "scancel", lambda *a, **k: pytest.fail("scancel while unreachable"))
    rec = _slurm_run(store, tiny_plan, "61")
    out = CliRunner().invoke(
        app, ["-f", str(tiny_plan.settings.path), "stop", rec.run_id], env={"COLUMNS": "400"}
    )
    assert out.exit_code == 1, out.output
    text = " ".join(out.output.split())
    assert "Slurm is unreachable, so job 61" in text and "not cancelled yet" in text, text
    assert "stops the run as soon as the job starts" in text and "`mdtui stop` again" in text
    assert "no live process" not in text
    assert (Path(rec.run_dir) / STOP_REQUEST).is_file()
    assert store.get(rec.run_id).status == "queued"  # nothing happened to it yet


def test_stop_of_a_run_waiting_in_mdtui_s_queue_cancels_it(tiny_plan, store) -> None:
    """`mdtui stop` said "not running" for a queued local run; it cancels it, as the TUI's stop does."""
    from typer.testing import CliRunner

    from mdtui.cli import app
    from mdtui.scheduling import scheduler

    rec = scheduler.enqueue(store, tiny_plan, ["tiny"])[0]
    out = CliRunner().invoke(
        app, ["-f", str(tiny_plan.settings.path), "stop", rec.run_id], env={"COLUMNS": "400"}
    )
    assert out.exit_code == 0, out.output
    assert f"run {rec.run_id} (tiny): cancelled" in out.output
    final = store.get(rec.run_id)
    assert (final.status, final.error) == ("cancelled", "cancelled from the queue")
    assert scheduler.queue_entries(store) == []


def test_status_says_slurm_is_unreachable_under_its_table(tiny_plan, store, monkeypatch) -> None:
    """The note column (cut or dropped on a narrow terminal) was the only place that said it."""
    import time

    from typer.testing import CliRunner

    from mdtui.cli import app
    from mdtui.execution import slurm_status

    controller_down(monkeypatch)
    rec = _slurm_run(store, tiny_plan, "81", status="running")
    store.update(rec.run_id, job_state="RUNNING on n1, 3m")
    start = time.monotonic()
    out = CliRunner().invoke(app, ["-f", str(tiny_plan.settings.path), "status"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert time.monotonic() - start < 5.0
    last = out.output.strip().splitlines()[-1]
    assert last.startswith("Slurm unreachable — last known state at ") and last.endswith(
        ": the Slurm runs above show their last known state"
    ), out.output
    assert slurm_status.outage([store.get(rec.run_id)]) == last.split(": the Slurm runs")[0]
    monkeypatch.setattr(slurm_status.slurm_cli, "job_states", lambda ids: {"81": Job("RUNNING", elapsed_s=9)})
    out = CliRunner().invoke(app, ["-f", str(tiny_plan.settings.path), "status"], env={"COLUMNS": "80"})
    assert out.exit_code == 0 and "unreachable" not in out.output, out.output


def test_a_stop_that_races_a_requeue_ends_stopped_though_the_dead_attempt_said_cancelled_outside(
    tiny_plan, store, monkeypatch
) -> None:
    """The interleaving CI hit (issue 19, finding 1): `scontrol requeue` SIGTERMs the running attempt,
    whose supervisor records Slurm's SIGTERM and writes its ending ("failed: cancelled outside mdtui")
    before Slurm shows the job PENDING; no poll saw that gap, so the index still says running when
    `mdtui stop` cancels the pending job. The dead attempt's ending is not the run's: it ends stopped."""
    from mdtui.execution import slurm_status
    from mdtui.execution.ending import BY_SLURM, CANCELLED_REASON, SLURM_TERM, STOP_REQUEST
    from mdtui.execution.node_store import NODE_KEY
    from mdtui.execution.slurm import SlurmLauncher
    from mdtui.system import slurm as slurm_cli

    jobs = {"71": Job("PENDING", "BeginTime")}
    cancels: list[tuple] = []

    def scancel(job_id, signal=None):
        cancels.append((job_id, signal))
        jobs[job_id] = Job("CANCELLED", node="n1", elapsed_s=5)
        return True

    monkeypatch.setattr(
        slurm_status.slurm_cli, "job_states", lambda ids: {i: jobs[i] for i in ids if i in jobs}
    )
    monkeypatch.setattr(slurm_cli, "scancel", scancel)
    rec = _slurm_run(store, tiny_plan, "71", status="running")
    store.update(rec.run_id, job_state="RUNNING on n1, 0m", started_t=1.0)
    run_dir = Path(rec.run_dir)
    # what the requeued attempt's supervisor left (its node fields, Slurm's SIGTERM, its ending)
    store.update_run_json(run_dir, {NODE_KEY: {"attempt": "71:0", "status": "running"}})
    (run_dir / SLURM_TERM).write_text(json.dumps({"t": 1.0, "grace": 60.0, "by": BY_SLURM}))
    dead = {"run_id": rec.run_id, "status": "failed", "error": CANCELLED_REASON, "stop_requested": True}
    (run_dir / "exit.json").write_text(json.dumps({**dead, "results_pending": True, "attempt": "71:0"}))

    assert SlurmLauncher(store).stop(rec.run_id)
    assert cancels == [("71", None)]  # a pending job: a plain scancel
    assert json.loads((run_dir / STOP_REQUEST).read_text())["by"] == "mdtui (scancel)"
    assert json.loads((run_dir / "exit.json.prev").read_text())["attempt"] == "71:0"  # set aside
    final = SlurmLauncher(store).poll(rec.run_id) and store.get(rec.run_id)
    assert final.status == "stopped", final.error
    assert "outside mdtui" not in (final.error or "") and "cancelled by mdtui" in final.error


def test_slurm_s_sigterm_never_overwrites_a_stop_mdtui_asked_for_at_the_same_moment(
    tiny_plan, store, monkeypatch
) -> None:
    """The supervisor of a Slurm job that gets Slurm's SIGTERM (a requeue) records it while mdtui's
    stop writes its request: mdtui's request is written between the supervisor's look and its write.
    It stays mdtui's, the attempt ends stopped (not "cancelled outside mdtui"), and the next attempt
    sets Slurm's record aside but keeps the request (so it stops at once)."""
    from mdtui.execution import slurm_job
    from mdtui.execution.ending import SLURM_TERM, STOP_REQUEST
    from mdtui.execution.supervise import Supervisor

    rec = _slurm_run(store, tiny_plan, "81", status="running")
    run_dir = Path(rec.run_dir)
    env = {"MDTUI_SLURM": "1", "SLURM_JOB_ID": "81", "SLURM_RESTART_COUNT": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    asked = {"t": 2.0, "grace": 60.0, "by": "mdtui (scancel)"}

    def mdtui_stops_meanwhile() -> str:  # called between the supervisor's look and its write
        (run_dir / STOP_REQUEST).write_text(json.dumps(asked))
        return slurm_job.BY_SLURM

    monkeypatch.setattr(slurm_job, "term_origin", mdtui_stops_meanwhile)
    supervisor = Supervisor(run_dir)
    supervisor._handle_term()
    assert json.loads((run_dir / STOP_REQUEST).read_text()) == asked
    assert json.loads((run_dir / SLURM_TERM).read_text())["by"] == slurm_job.BY_SLURM
    supervisor._finish(exit_code=0, sig=None, stop_requested=supervisor._stop_request() is not None)
    ending = json.loads((run_dir / "exit.json").read_text())
    assert ending["status"] == "stopped" and "outside mdtui" not in (ending["error"] or ""), ending
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # Slurm runs the job again
    slurm_job.prepare(supervisor.store, rec.run_id, run_dir)
    assert json.loads((run_dir / STOP_REQUEST).read_text()) == asked
    assert not (run_dir / SLURM_TERM).exists() and (run_dir / f"{SLURM_TERM}.prev").is_file()
    assert not (run_dir / "exit.json").exists()


def test_slurm_s_own_sigterm_still_ends_the_run_cancelled_outside_mdtui(
    tiny_plan, store, monkeypatch
) -> None:
    """The counterpart: nobody in mdtui asked; Slurm's SIGTERM (someone's scancel) is said as such."""
    from mdtui.execution import slurm_job
    from mdtui.execution.ending import CANCELLED_REASON, STOP_REQUEST
    from mdtui.execution.supervise import Supervisor

    rec = _slurm_run(store, tiny_plan, "82", status="running")
    run_dir = Path(rec.run_dir)
    monkeypatch.setenv("MDTUI_SLURM", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "82")
    monkeypatch.setattr(slurm_job, "term_origin", lambda: slurm_job.BY_SLURM)
    supervisor = Supervisor(run_dir)
    supervisor._handle_term()
    assert not (run_dir / STOP_REQUEST).exists()
    supervisor._finish(exit_code=0, sig=None, stop_requested=supervisor._stop_request() is not None)
    ending = json.loads((run_dir / "exit.json").read_text())
    assert (ending["status"], ending["error"]) == ("failed", CANCELLED_REASON), ending
