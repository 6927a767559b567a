"""The supervisor's side of a Slurm job: what changes when it runs inside an sbatch job.

The job script written by ``mdtui.execution.slurm`` exports ``MDTUI_SLURM=1`` and ``exec``s the same
supervisor a local run has, so the supervisor *is* the batch shell: Slurm's warning signal
(``--signal=B:TERM@S``) and mdtui's stop (``scancel --signal=TERM --batch``) reach it directly.
Inside a job the supervisor

* keeps the GPUs Slurm granted: the inherited ``CUDA_VISIBLE_DEVICES`` is left alone (never replaced
  by NVML indices of the whole node), and the run's devices are recorded as Slurm gave them;
* resumes by itself when Slurm runs the job again (``scontrol requeue``, preemption, a failed node:
  ``SLURM_RESTART_COUNT`` > 0) from ``checkpoints/last.pt`` in the same run directory;
* tells a SIGTERM mdtui did not send apart: near the job's time limit it is the warning (the run ends
  ``stopped``, reason "time limit", resumable); otherwise someone else cancelled or requeued the job
  (``failed``, saying so), recorded in ``slurm-term.json``. mdtui's own stop writes
  ``stop-request.json`` before it signals; the two files are never the same, so neither overwrites
  the other when a stop and a requeue come at once.

Run as ``python -m mdtui.execution.slurm_job`` it is the job script's helper on the nodes:

* ``guard RUN_DIR``: refuses (exit 3, saying why) to train a run that already completed, so that
  ``sbatch job.sbatch`` by hand never overwrites a finished run's best.pt (a ``from`` dependant may
  point at it);
* ``torchrun ARGS...``: one node's torchrun of a multi-node run, told this node's routable address
  (``--local-addr``) and the first node's (``--rdzv-endpoint``): torch otherwise names a node by its
  host name, which may resolve to loopback there, and the ranks then hang with no error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

# who sent a stop (the names live with the one decision that reads them)
from mdtui.execution.ending import BY_SLURM, BY_TIME_LIMIT, SLURM_TERM, Ending
from mdtui.runs.rundir import EXIT_FILE
from mdtui.runs.status import RunStatus
from mdtui.runs.store import RunStore
from mdtui.system import slurm as slurm_cli
from mdtui.system.fs import read_json

ENV_FLAG = "MDTUI_SLURM"  # set to "1" by the job script
ENV_STARTED = "MDTUI_SLURM_STARTED"  # epoch seconds the job's script started (each requeue anew)
ENV_LIMIT = "MDTUI_SLURM_LIMIT"  # the job's time limit in seconds ("" when none was asked)
ENV_LEFT = "MDTUI_SLURM_LEFT"  # squeue's time left (%L) when the script started: partition defaults too
ENV_MULTI_NODE = (
    "MDTUI_SLURM_ENGINE"  # nodes > 1: srun + torchrun across the allocation, ending in "-m engine"
)
ENV_SIGNAL = "MDTUI_SLURM_SIGNAL"  # seconds before the limit the warning is asked for
# Slurm may send the warning up to 60 s early (its event resolution); a TERM this close to the end
# of the allowed time is the warning, not someone's scancel
SIGNAL_SLACK_SECONDS = 90


def active(env: dict[str, str] | None = None) -> bool:
    """Is this process the supervisor of an mdtui Slurm job?"""
    env = os.environ if env is None else env
    return env.get(ENV_FLAG) == "1" and bool(env.get("SLURM_JOB_ID"))


def granted_devices(env: dict[str, str] | None = None) -> list[str]:
    """The GPUs Slurm granted the job (its CUDA_VISIBLE_DEVICES: indices or UUIDs), else ["cpu"]."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [d.strip() for d in visible.split(",") if d.strip()]
    if not ids or ids == ["NoDevFiles"]:  # Slurm's marker for a GRES without device files
        return ["cpu"]
    return ids


def restarted(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    try:
        return int(env.get("SLURM_RESTART_COUNT") or 0) > 0
    except ValueError:
        return False


def prepare(store: RunStore, run_id: str, run_dir: Path, env: dict[str, str] | None = None) -> None:
    """Before the engine starts inside a job: record where it runs, and on a rerun of the job set it
    up to resume in the same directory (the previous attempt's ending and stop request set aside)."""
    env = os.environ if env is None else env
    node = env.get("SLURMD_NODENAME") or socket.gethostname()
    fields: dict[str, Any] = {"devices": granted_devices(env), "job_state": f"RUNNING on {node}"}
    if env.get("SLURM_JOB_ID"):
        fields["job_id"] = env["SLURM_JOB_ID"]
    if restarted(env):  # the previous attempt's ending no longer holds
        fields.update(error=None, ended_t=None, exit_code=None)
    store.update(run_id, **fields)
    if restarted(env):
        set_aside_attempt(run_dir)
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        store.update_run_json(run_dir, {"resume": resume, "slurm_restarts": int(env["SLURM_RESTART_COUNT"])})


def set_aside_attempt(run_dir: Path) -> None:
    """An attempt of the job is over and another one comes: its ending and its record of Slurm's
    SIGTERM are set aside (``*.prev``), so neither is read as the next attempt's. A stop mdtui asked
    for (stop-request.json) stays: it applies to whatever attempt comes, and stops it at once (a
    stop that raced a requeue ends the run stopped, not run again)."""
    for name in (EXIT_FILE, SLURM_TERM):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).replace(run_dir / f"{name}.prev")


def term_origin(now: float | None = None, env: dict[str, str] | None = None) -> str:
    """Who sent a SIGTERM mdtui did not ask for: Slurm's time-limit warning, or someone else."""
    env = os.environ if env is None else env
    now = time.time() if now is None else now
    try:
        started = float(env.get(ENV_STARTED) or "nan")
        warn = float(env.get(ENV_SIGNAL) or 0)
    except ValueError:
        return BY_SLURM
    left = slurm_cli.parse_duration(env.get(ENV_LEFT) or "")  # None for UNLIMITED, or when squeue failed
    if left is None and (env.get(ENV_LIMIT) or "").isdigit():
        left = int(env[ENV_LIMIT])
    if left is not None and started == started and now >= started + left - warn - SIGNAL_SLACK_SECONDS:
        return BY_TIME_LIMIT
    return BY_SLURM


def term_by(term: dict[str, Any] | None) -> str | None:
    """Who sent the stop signal when Slurm did (the slurm-term.json this supervisor wrote for it),
    else None: what ``ending.decide`` takes to tell Slurm's stop from mdtui's."""
    by = (term or {}).get("by")
    return by if by in (BY_TIME_LIMIT, BY_SLURM) else None


def job_exit_status(ending: Ending) -> int:
    """The supervisor's exit status inside a job: 0 only for a completed run, so that Slurm holds a
    dependant (afterok) of a run that failed or stopped."""
    return 0 if ending.status == RunStatus.COMPLETED else 1


def multi_node_command(run_dir: Path, *, resume: bool, env: dict[str, str] | None = None) -> list[str] | None:
    """The engine command of a job over several nodes (one torchrun per node through srun, as the
    job script spells it), None for a run on one node (the supervisor's own command)."""
    env = os.environ if env is None else env
    base = env.get(ENV_MULTI_NODE, "").strip() if active(env) else ""
    if not base:
        return None
    return [*shlex.split(base), str(run_dir), *(["--resume"] if resume else [])]


# --------------------------------------------------------------------------- the job script's helpers

RDZV_BASE_PORT = 29500  # + the job id modulo RDZV_PORTS: two multi-node jobs may share a first node
RDZV_PORTS = 500
GUARD_EXIT = 3


class NoRoute(Exception):
    """A multi-node run whose nodes cannot reach each other; the message says what to fix."""


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def routable_address(peer: str) -> str:
    """The address this node reaches ``peer`` from (the kernel's route choice; no packet is sent)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((peer, RDZV_BASE_PORT))
        return str(probe.getsockname()[0])


def rendezvous(env: dict[str, str] | None = None) -> tuple[str, str]:
    """(this node's address, the rendezvous endpoint HOST:PORT) of one node of a multi-node job.

    The endpoint is the node that runs the batch script (srun's SLURM_LAUNCH_NODE_IPADDR: the address
    Slurm itself reached it at); this node's address is the one it reaches that node from. Either one
    on loopback cannot serve other nodes: ``NoRoute`` then, before any training."""
    env = os.environ if env is None else env
    first = env.get("SLURM_LAUNCH_NODE_IPADDR", "").strip()
    node = env.get("SLURMD_NODENAME") or socket.gethostname()
    if not first:
        raise NoRoute(
            f"node {node}: SLURM_LAUNCH_NODE_IPADDR is not set: a multi-node run's torchrun must be "
            "started by srun inside its job (job.sbatch does this)"
        )
    mine = routable_address(first)
    if is_loopback(first) or is_loopback(mine):
        raise NoRoute(
            f"node {node} reaches the job's first node at {first} from {mine}, a loopback address: "
            "ranks on other nodes could not reach it, and the run would hang. Give the nodes "
            "addresses the other nodes can reach (slurm.conf NodeAddr, or host names that do not "
            "resolve to 127.x on the nodes themselves)"
        )
    job = env.get("SLURM_JOB_ID", "0")
    port = RDZV_BASE_PORT + (int(job) % RDZV_PORTS if job.isdigit() else 0)
    host = f"[{first}]" if ":" in first else first
    return mine, f"{host}:{port}"


def torchrun_command(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """This node's torchrun of a multi-node run, with its address and the rendezvous endpoint."""
    mine, endpoint = rendezvous(env)
    first = endpoint.rsplit(":", 1)[0].strip("[]")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--local-addr={mine}",
        f"--rdzv-endpoint={endpoint}",
        # who hosts the rendezvous store, said rather than guessed: torch would look its own host
        # name up, which a node may not resolve
        f"--rdzv-conf=is_host={int(mine == first)}",
        *args,
    ]


def completed_refusal(run_dir: Path) -> str | None:
    """Why the job of ``run_dir`` must not train it again (it completed), else None."""
    ending = read_json(run_dir / EXIT_FILE)
    if not isinstance(ending, dict) or ending.get("status") != RunStatus.COMPLETED.value:
        return None
    return (
        f"mdtui: the run in {run_dir} already completed: its job is not run again, so that its "
        "checkpoints/best.pt (which a `from` experiment may start from) stays as it is. "
        "Train again with a new run: `mdtui run EXPERIMENT`"
    )


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "guard":
        refusal = completed_refusal(Path(argv[1]))
        if refusal:
            print(refusal, file=sys.stderr)
            return GUARD_EXIT
        return 0
    if argv and argv[0] == "torchrun":
        try:
            command = torchrun_command(argv[1:])
        except (NoRoute, OSError) as exc:
            print(f"mdtui: {exc}", file=sys.stderr)
            return 2
        os.execv(command[0], command)
    print("usage: python -m mdtui.execution.slurm_job guard RUN_DIR | torchrun ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
