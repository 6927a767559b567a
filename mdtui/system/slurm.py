"""The thin layer of Slurm command-line calls: run one command, parse its output (issue #14).

Everything mdtui asks Slurm goes through here (the launcher in mdtui/execution/slurm.py, `mdtui gpus`).
The command-line tools, not submitit or pyslurm: they need no extra package, they work on clusters
without accounting (slurmdbd; `sacct` then answers nothing), and one `squeue` call answers for any
number of jobs: a poll of 1,000 jobs takes 0.11 s, one call per job would take ~21 s
(benchmarks/slurm_poll.py).

Job states come from `squeue -t all`, which also lists finished jobs for as long as the controller
keeps them (MinJobAge, 300 s by default). A job it no longer lists is absent from `job_states`'s
answer; the caller decides what that means (for a run: its exit.json, else lost).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from shutil import which

COMMAND_TIMEOUT_S = 60.0  # sbatch, sinfo: may be slow on a busy controller
# a poll's one squeue and a stop's scancel: a controller that does not answer within this is said to
# be unreachable at once (the clients themselves retry for ~10 s per call)
QUERY_TIMEOUT_S = 2.5
SIGNAL_TIMEOUT_S = 5.0
MAX_IDS_PER_CALL = 5000  # job ids on one squeue command line (~40 KB)

# Slurm's terminal job states (squeue's %T / -O State spelling).
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)

# Node states (sinfo's StateLong without its flag suffixes) in which a node takes new jobs.
_NODE_TAKES_JOBS = frozenset({"idle", "mixed", "planned", "completing"})

# squeue -O fields, in the order `_parse_job_line` reads them; Name last because it may hold the separator.
_JOB_FIELDS = (
    "JobID",
    "State",
    "Reason",
    "exit_code",
    "NodeList",
    "TimeUsed",
    "TimeLimit",
    "RestartCnt",
    "Name",
)
_SEP = "|"

# stderr of a client that found no cluster: no slurm.conf (SLURM_CONF unset), or no controller answers.
_UNAVAILABLE = (
    "Unable to contact slurm controller",
    "Could not establish a configuration source",
    "Unable to process configuration file",
)


class SlurmError(RuntimeError):
    """A Slurm command failed; the message names the command and carries its stderr."""


class SlurmUnavailable(SlurmError):
    """The Slurm tools are not installed, or no controller answers."""


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # Slurm's base state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    reason: str | None  # Resources, Priority, Dependency, DependencyNeverSatisfied, NonZeroExitCode, ...
    node: str | None  # the allocated node list ("n01", "n[01-02]"); None while pending
    elapsed_s: int | None
    limit_s: int | None  # None: no limit
    exit_code: int | None  # the batch script's exit status, once finished
    signal: int | None  # the signal that ended the batch script, once finished
    restarts: int  # how often Slurm requeued the job
    name: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "reason": self.reason,
            "node": self.node,
            "elapsed_s": self.elapsed_s,
            "limit_s": self.limit_s,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "restarts": self.restarts,
            "name": self.name,
        }


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    available: bool  # the partition is up
    nodes: int
    gpus_total: int
    gpus_used: int
    gpus_free: int  # unallocated GPUs on nodes that take jobs now (not down, drained, not responding)
    states: dict[str, int] = field(default_factory=dict)  # node state -> how many nodes

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "default": self.default,
            "available": self.available,
            "nodes": self.nodes,
            "gpus_total": self.gpus_total,
            "gpus_used": self.gpus_used,
            "gpus_free": self.gpus_free,
            "states": dict(self.states),
        }


# --------------------------------------------------------------------------------------- commands


def available() -> bool:
    """Are the Slurm client tools installed here?"""
    return which("sbatch") is not None and which("squeue") is not None


def run(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
) -> str:
    """Run one Slurm command; its stdout, or SlurmError/SlurmUnavailable with the command and stderr."""
    cmd = [str(a) for a in args]
    conf = (env if env is not None else os.environ).get("SLURM_CONF")
    if conf is not None and not Path(conf).is_file():
        # The clients would retry for 60 s before saying so.
        raise SlurmUnavailable(
            f"SLURM_CONF names {conf!r}, which is not a file: point it at the cluster's slurm.conf"
        )
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise SlurmUnavailable(f"{cmd[0]} not found: is Slurm installed here (and on PATH)?") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmUnavailable(f"{' '.join(cmd[:2])} did not answer in {timeout:g} s") from exc
    if done.returncode != 0:
        err = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        cls = SlurmUnavailable if any(m in err for m in _UNAVAILABLE) else SlurmError
        raise cls(f"{' '.join(cmd[:2])} failed: {err}")
    return done.stdout


def sbatch(
    script: Path,
    args: Sequence[str] = (),
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Submit a batch script; the job id Slurm gave it."""
    out = run(["sbatch", "--parsable", *args, str(script)], cwd=cwd, env=env).strip()
    # --parsable prints "jobid" or "jobid;cluster".
    job_id = out.splitlines()[-1].split(";", 1)[0].strip() if out else ""
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {out!r}, not a job id")
    return job_id


def scancel(job_id: str, signal: str | None = None, *, full: bool = True, batch: bool = False) -> bool:
    """Cancel a job, or (with ``signal``) send it that signal; False when Slurm says it has already ended.

    ``full`` (the default) reaches the batch shell, its children and every step; ``batch`` only the
    batch step (the shell and what it started without srun)."""
    args = ["scancel"]
    if signal:
        args.append(f"--signal={signal}")
    if batch:
        args.append("--batch")
    elif full:
        args.append("--full")
    try:
        run([*args, str(job_id)], timeout=SIGNAL_TIMEOUT_S)
    except SlurmUnavailable:
        raise
    except SlurmError as exc:
        if "Invalid job id" in str(exc) or "already completing or completed" in str(exc):
            return False
        raise
    return True


def requeue(job_id: str) -> None:
    """Put a job back in the queue (it restarts from its script; SLURM_RESTART_COUNT grows)."""
    run(["scontrol", "requeue", str(job_id)])


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The state of each job Slurm still knows, in ONE squeue call; unknown ids are absent.

    Past ``MAX_IDS_PER_CALL`` ids the list is split, so the command line stays far below the kernel's
    argument limit."""
    ids = sorted({str(j) for j in job_ids}, key=lambda j: (len(j), j))
    states: dict[str, JobState] = {}
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        states.update(_job_states_call(ids[start : start + MAX_IDS_PER_CALL]))
    return states


def _job_states_call(ids: list[str]) -> dict[str, JobState]:
    fmt = ",".join(f"{name}:{_SEP}" for name in _JOB_FIELDS)
    try:
        out = run(
            ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", f"--Format={fmt}"],
            timeout=QUERY_TIMEOUT_S,
        )
    except SlurmUnavailable:
        raise
    except SlurmError as exc:
        # With one id squeue asks for that job alone and fails when the controller forgot it.
        if "Invalid job id" in str(exc):
            return {}
        raise
    wanted = set(ids)
    states: dict[str, JobState] = {}
    for line in out.splitlines():
        job = parse_job_line(line)
        # An array or het job lists its members as "12_3" / "12+1": the caller asked about plain ids.
        if job is not None and job.job_id in wanted:
            states[job.job_id] = job
    return states


def partitions() -> list[Partition]:
    """Every partition with its nodes and GPUs, from ONE sinfo call (one line per node and partition)."""
    fields = ("NodeHost", "Partition", "Available", "StateLong", "Gres", "GresUsed")
    fmt = ",".join(f"{name}:{_SEP}" for name in fields)
    out = run(["sinfo", "--noheader", "--Node", f"--Format={fmt}"])
    return parse_partitions(out)


# --------------------------------------------------------------------------------------- parsing


def parse_job_line(line: str) -> JobState | None:
    """One line of ``squeue -O`` with ``_JOB_FIELDS``, each followed by the separator."""
    parts = line.rstrip("\n").split(_SEP, len(_JOB_FIELDS) - 1)
    if len(parts) != len(_JOB_FIELDS) or not parts[0].strip():
        return None
    job_id, state, reason, status, nodes, used, limit, restarts, name = (p.strip() for p in parts)
    # The state may carry flags ("CANCELLED by 0" in some versions, "COMPLETING+" ...): the word is the state.
    state = re.split(r"[\s+]", state, maxsplit=1)[0].upper()
    name = name[: -len(_SEP)] if name.endswith(_SEP) else name
    finished = state in FINISHED_STATES
    exit_code, signal = _wait_status(status) if finished else (None, None)
    return JobState(
        job_id=job_id,
        state=state,
        reason=None if reason in ("", "None", "(null)") else reason,
        node=None if nodes in ("", "(null)") or state == "PENDING" else nodes,
        elapsed_s=parse_duration(used),
        limit_s=parse_duration(limit),
        exit_code=exit_code,
        signal=signal,
        restarts=int(restarts) if restarts.isdigit() else 0,
        name=name,
    )


def _wait_status(raw: str) -> tuple[int | None, int | None]:
    """squeue's exit_code is the batch shell's raw wait status: exit code in the high byte, signal low."""
    if not raw.lstrip("-").isdigit():
        return None, None
    status = int(raw)
    if status < 0:
        return None, None
    sig = status & 0x7F
    return (None, sig) if sig else ((status >> 8) & 0xFF, None)


def parse_duration(text: str) -> int | None:
    """Slurm's "[D-]HH:MM:SS" / "MM:SS" / "M" as seconds; None for UNLIMITED, INVALID, N/A or nonsense."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:
        # "D-HH", "D-HH:MM", "D-HH:MM:SS"
        h, mi, s = (parts + [0, 0])[:3]
        return int(days) * 86400 + h * 3600 + mi * 60 + s
    if len(parts) == 3:
        return parts[0] * 3600 + parts[1] * 60 + parts[2]
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 60  # a bare number is minutes


def gres_count(gres: str, name: str = "gpu") -> int:
    """How many ``name`` GRES a sinfo Gres/GresUsed value holds: "gpu:4", "gpu:a100:2(IDX:0-1),gpu:v100:1"."""
    total = 0
    for entry in _top_level_split(gres):
        entry = re.sub(r"\(.*\)$", "", entry.strip())
        bits = entry.split(":")
        if bits[0] != name or len(bits) < 2:
            continue
        count = bits[-1]
        # "gpu:a100" (no count) means one; counts may carry a K/M suffix on huge nodes.
        if count.isdigit():
            total += int(count)
        elif re.fullmatch(r"\d+[KM]", count):
            total += int(count[:-1]) * (1024 if count[-1] == "K" else 1024 * 1024)
        elif len(bits) == 2:
            total += 1
    return total


def _top_level_split(text: str) -> list[str]:
    """Split on commas outside parentheses ("gpu:2(S:0-1),gpu:1" -> two entries)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p and p != "(null)"]


def parse_partitions(out: str) -> list[Partition]:
    """Aggregate ``sinfo -N -O NodeHost,Partition,Available,StateLong,Gres,GresUsed`` lines per partition."""
    acc: dict[str, dict] = {}
    seen: set[tuple[str, str]] = set()
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(_SEP)]
        if len(parts) < 6 or not parts[1]:
            continue
        node, part, avail, state, gres, used = parts[:6]
        default = part.endswith("*")
        part = part.rstrip("*")
        if (node, part) in seen:  # a node listed twice for one partition counts once
            continue
        seen.add((node, part))
        p = acc.setdefault(
            part, {"default": False, "available": False, "nodes": 0, "total": 0, "used": 0, "free": 0}
        )
        p["default"] = p["default"] or default
        p["available"] = p["available"] or avail == "up"
        p["nodes"] += 1
        total, in_use = gres_count(gres), gres_count(used)
        p["total"] += total
        p["used"] += in_use
        base = re.match(r"[a-z_]*", state).group(0)
        # "idle*" (not responding), "mixed~" (powered off), "mixed-" (powering down): no new jobs now.
        takes_jobs = base in _NODE_TAKES_JOBS and not re.search(r"[*~#%!@^-]", state[len(base) :])
        if takes_jobs and avail == "up":
            p["free"] += max(0, total - in_use)
        states = p.setdefault("states", {})
        states[state] = states.get(state, 0) + 1
    return [
        Partition(
            name=name,
            default=p["default"],
            available=p["available"],
            nodes=p["nodes"],
            gpus_total=p["total"],
            gpus_used=p["used"],
            gpus_free=p["free"],
            states=p.get("states", {}),
        )
        for name, p in acc.items()
    ]
