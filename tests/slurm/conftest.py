"""A real two-node Slurm for the `slurm` tests (tests/slurm/cluster.sh up --nodes 2).

Its default partition is node1 alone, so a test that does not ask for more runs as on one node;
``SlurmCluster.multi_partition`` holds both nodes (a second slurmd in its own network namespace).

`slurm_cluster` (session) uses the cluster CI brought up, or brings one up itself and takes it down at
the end. It skips, with the reason, only where the daemons cannot start here: the Slurm/munge packages
are missing or the tests do not run as root. Any other failure to start is a test failure: CI must run
these tests. Tests that use it are marked `slurm` and `slow`.

`slurm` (per test) is the same cluster; at teardown it cancels the jobs the test submitted through it
and resumes the node if the test set it down, so tests do not leak into each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mdtui.system import slurm as slurm_cli

CLUSTER_SH = Path(__file__).with_name("cluster.sh")
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # (under pytest-xdist they also share one worker: tests/conftest.py's `slurm` group)
    for item in items:
        if {"slurm_cluster", "slurm"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.slow)


def _missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def _cluster_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=120, env=env
    )


@dataclass
class SlurmCluster:
    conf: Path
    node: str  # the default partition's node
    nodes: tuple[str, ...] = ()  # every node
    multi_partition: str | None = None  # the partition of every node (None: a one-node cluster)
    submitted: list[str] = field(default_factory=list)
    downed: bool = False  # a test set the node DOWN: its cleanup resumes it whatever sinfo says then

    # ------------------------------------------------------------------ jobs

    def sbatch(self, args: Sequence[str] = (), wrap: str | None = None, script: Path | None = None) -> str:
        """Submit ``script`` or ``--wrap`` a command line; the job id (cancelled at the test's end)."""
        if (wrap is None) == (script is None):
            raise ValueError("give exactly one of wrap= and script=")
        cmd = ["sbatch", "--parsable", "--output=/dev/null", *args]
        cmd += [f"--wrap={wrap}"] if wrap is not None else [str(script)]
        job_id = slurm_cli.run(cmd).strip().split(";", 1)[0]
        self.submitted.append(job_id)
        return job_id

    def job(self, job_id: str) -> slurm_cli.JobState | None:
        return slurm_cli.job_states([job_id]).get(job_id)

    def wait_for_job_state(
        self, job_id: str, states: Collection[str], timeout: float = 60.0
    ) -> slurm_cli.JobState:
        """Poll until the job is in one of ``states``; fail with its last state after ``timeout``."""
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job is not None and job.state in states:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not in {sorted(states)} within {timeout}s; last: {job}")

    def submit_and_wait(
        self,
        args: Sequence[str] = (),
        wrap: str | None = None,
        script: Path | None = None,
        states: Collection[str] = slurm_cli.FINISHED_STATES,
        timeout: float = 60.0,
    ) -> slurm_cli.JobState:
        """Submit, then wait until the job reaches ``states`` (by default: any end state)."""
        return self.wait_for_job_state(self.sbatch(args, wrap=wrap, script=script), states, timeout)

    # ------------------------------------------------------------------ the node

    def node_state(self, node: str | None = None) -> str:
        out = slurm_cli.run(
            ["sinfo", "--noheader", "--Node", f"--nodes={node or self.node}", "--Format=StateLong"]
        )
        return out.strip().splitlines()[0].strip() if out.strip() else ""

    def node_down(self, reason: str = "test", node: str | None = None) -> None:
        """Set a node (the default one) DOWN: Slurm requeues its requeueable jobs and ends the
        others NODE_FAIL."""
        self.downed = True
        slurm_cli.run(
            ["scontrol", "update", f"nodename={node or self.node}", "state=down", f"reason={reason}"]
        )

    def node_up(self) -> None:
        """Resume a node set down; returns once it takes jobs again. After this test's own
        ``node_down`` it resumes whatever sinfo shows at that moment: right after a DOWN, sinfo was
        seen to report a state without "down" (the node then stayed down for the next test)."""
        deadline = time.monotonic() + 30
        downed, self.downed = self.downed, False
        for node in self.nodes or (self.node,):
            resumed = False
            while True:
                state = self.node_state(node)
                if not resumed and (downed or "down" in state or "drain" in state):
                    resumed = True
                    with contextlib.suppress(slurm_cli.SlurmError):
                        slurm_cli.run(["scontrol", "update", f"nodename={node}", "state=resume"])
                elif state.startswith(("idle", "mixed", "allocated")):
                    break
                elif "down" in state or "drain" in state:
                    resumed = False  # the resume came too early: ask again
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {node} did not come back: {state}")
                time.sleep(0.2)

    # ------------------------------------------------------------------ the controller

    def controller_kill(self) -> None:
        """SIGKILL slurmctld once its job state is on disk, so that a restart knows every job.

        slurmctld saves job state from a thread that batches changes (up to ~5 s under load): a
        SIGKILL right after a submission loses that job, and the restarted controller answers
        "Invalid job id" for it (seen in CI). That loss is Slurm's own; these tests are about what
        mdtui does while the controller is away, so they kill it after a save that includes every
        change so far: a no-op update of a live job schedules one, and the file's mtime says it ran.
        """
        self._save_job_state()
        pid_file = self.conf.parent.parent / "run" / "slurmctld.pid"
        os.kill(int(pid_file.read_text().strip()), 9)
        deadline = time.monotonic() + 10
        while subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0:
            if time.monotonic() > deadline:
                raise AssertionError("slurmctld still answers 10 s after SIGKILL")
            time.sleep(0.1)

    def _save_job_state(self) -> None:
        live = subprocess.run(
            ["squeue", "-h", "-t", "PD,R,CG", "-o", "%i"], capture_output=True, text=True, timeout=30
        ).stdout.split()
        if not live:
            return  # nothing a restart could lose
        state = self.conf.parent.parent / "state" / "job_state"
        before = state.stat().st_mtime if state.is_file() else 0.0
        # file times come from the kernel's coarse clock, a few ms behind time.time()
        asked = time.time() - 0.05
        subprocess.run(
            ["scontrol", "update", f"JobId={live[0]}", "Comment=mdtui-test-state-save"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        deadline = time.monotonic() + 30
        while not (state.is_file() and state.stat().st_mtime != before and state.stat().st_mtime >= asked):
            if time.monotonic() > deadline:
                raise AssertionError("slurmctld did not save its job state within 30 s")
            time.sleep(0.05)

    def controller_start(self) -> None:
        """Start slurmctld again from its saved state; returns once it answers."""
        sbin = shutil.which("slurmctld") or "/usr/sbin/slurmctld"
        subprocess.run([sbin, "-f", str(self.conf)], check=True, timeout=30)
        deadline = time.monotonic() + 30
        while subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError("slurmctld did not answer 30 s after its restart")
            time.sleep(0.2)

    def cleanup(self) -> None:
        """Cancel what this test submitted, wait until their resources are free, bring the node back."""
        if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
            self.controller_start()  # a test that killed the controller and failed before its restart
        live = [j for j, s in slurm_cli.job_states(self.submitted).items() if not s.finished]
        for job_id in live:
            with contextlib.suppress(slurm_cli.SlurmError):
                slurm_cli.scancel(job_id)
        self.node_up()
        # A cancelled job holds its CPUs and GPUs while COMPLETING: the next test counts on them.
        deadline = time.monotonic() + 30
        while any(not s.finished for s in slurm_cli.job_states(live).values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs {live} still not ended 30 s after scancel")
            time.sleep(0.2)
        self.submitted.clear()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    missing = _missing_tools()
    if missing:
        pytest.skip(
            f"Slurm daemons cannot start here: {', '.join(missing)} not installed "
            "(apt-get install -y slurm-wlm munge; .ci/run does this)"
        )
    if os.geteuid() != 0:
        pytest.skip("Slurm daemons cannot start here: tests/slurm/cluster.sh must run as root")
    with _cluster_users() as users:
        if not users["pids"]:  # the first session to use it: was it up before (CI), or ours to stop?
            users["ours"] = _cluster_sh("status").returncode != 0
        up = _cluster_sh("up", "--nodes", "2")
        if up.returncode != 0:
            pytest.fail(f"tests/slurm/cluster.sh up --nodes 2 failed:\n{up.stdout}\n{up.stderr}")
        users["pids"].append(os.getpid())
    old: dict[str, str | None] = {}
    try:
        env = _exports(up.stdout)
        # every process a test starts (mdtui, the supervisor, the job) finds the cluster;
        # GLOO_SOCKET_IFNAME names the link between the nodes
        old = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        nodes = tuple(env.get("MDTUI_SLURM_NODES", "").split())
        yield SlurmCluster(
            conf=Path(env["SLURM_CONF"]),
            node=nodes[0],
            nodes=nodes,
            multi_partition=env.get("MDTUI_SLURM_MULTI_PARTITION"),
        )
    finally:
        with _cluster_users() as users:
            # one entry: a test module that imports this fixture gets an instance of its own, in
            # the same process
            with contextlib.suppress(ValueError):
                users["pids"].remove(os.getpid())
            if not users["pids"] and users["ours"]:
                _cluster_sh("down")
                users["ours"] = False
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _cluster_users() -> Iterator[dict]:
    """The pytest sessions using the cluster, read and written under an exclusive file lock.

    Under pytest-xdist every worker is a session of its own, with its own `slurm_cluster`: the lock
    keeps two workers from running cluster.sh at once, and the shared list lets the last session out
    take down a cluster that the first one brought up (never one CI or a developer started). Entries
    of sessions that died without their teardown are dropped.
    """
    base = os.environ.get("MDTUI_SLURM_DIR", "/tmp/mdtui-slurm")  # where cluster.sh keeps the cluster
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    state = Path(f"{base}.sessions.json")
    with open(f"{base}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            users = json.loads(state.read_text())
        except (FileNotFoundError, ValueError):
            users = {"pids": [], "ours": False}
        users["pids"] = [pid for pid in users["pids"] if _alive(pid)]
        yield users
        state.write_text(json.dumps(users))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exports(stdout: str) -> dict[str, str]:
    """The ``export KEY=VALUE`` lines cluster.sh prints (values possibly single-quoted)."""
    env = {}
    for line in stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            env[key] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster for one test, cleaned up after it."""
    yield slurm_cluster
    slurm_cluster.cleanup()
