"""Runs of several processes (DistributedDataParallel started by torchrun) as the manager sees them.

A run has N processes: ``distributed.processes`` of its config when > 0, else one per GPU it was
given (1 on the CPU). With N > 1 its supervisor starts torchrun instead of the engine, and torchrun
starts the N ranks. Three things follow, and they live here:

* the command line (``torchrun_command``) and how many processes (``process_count``);
* the ranks' processes: torchrun starts every rank in a session of its own, so a signal to
  torchrun's process group never reaches a rank, and the ledger's look at torchrun's group does not
  see one. The supervisor records the ranks (pid + start time) in run.json as they appear
  (``find_ranks``), kills what is left of them when torchrun is gone, and a run counts as alive while
  any rank's group lives (``ranks_alive``);
* which rank failed and why (``failure_reason``): torchrun prints a failure summary ("Root Cause
  (first observed failure)") to stderr.log; the rank's own lines are in stderr.log (rank 0) or
  stderr.rank{k}.log (the engine redirects rank k there).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.schema.validate import KERNELS_ONE_PROCESS
from mdtui.system.fs import read_json
from mdtui.system.gpus import CPU_ID
from mdtui.system.processes import boot_id, group_has_live_member, process_alive, process_start_time

RANKS_KEY = "ranks"  # run.json: [{"rank", "pid", "start"}] of the current attempt
TAIL_LINES = 6
TORCHRUN_FAILED = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError"
# torchrun's own log lines ("W1201 20:01:04.864000 4601 site-packages/torch/...")
# torchrun's banner when it sets OMP_NUM_THREADS (a framed paragraph): never a reason
TORCHRUN_BANNER = re.compile(r"^(\*{5,}|Setting OMP_NUM_THREADS environment variable)")
TORCHRUN_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ")
FAILURE_ENTRY = re.compile(
    r"rank\s*:\s*(?P<rank>\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(?P<code>-?\d+) \(pid: (?P<pid>\d+)\)"
)


# --------------------------------------------------------------------------- how many, and the command


def process_count(config: Mapping[str, Any] | None, devices: Iterable[str]) -> int:
    """The run's number of processes (the DDP contract): ``distributed.processes`` when > 0, else one
    per GPU it was given, at least 1."""
    return processes_for(configured(config), devices)


def processes_for(wanted: int, devices: Iterable[str]) -> int:
    """``wanted`` processes when > 0, else one per GPU in ``devices`` (1 on the CPU)."""
    if wanted > 0:
        return wanted
    return max(1, sum(1 for d in devices if d and str(d) != CPU_ID))


def one_process_refusal(config: Mapping[str, Any] | None, processes: int) -> str | None:
    """Why a run of ``config`` cannot have ``processes`` processes, or None: kernel fine-tuning runs
    in one (validation refuses gpus / nodes that would give it more; this covers devices and
    ``--gpus`` given by hand, before any run exists rather than at the engine's start)."""
    if processes > 1 and (config or {}).get("kernels"):
        return f"{KERNELS_ONE_PROCESS}; it would get {processes}: give it one device"
    return None


def configured(config: Mapping[str, Any] | None) -> int:
    """``distributed.processes`` of an engine config (0, meaning one per GPU, when unset or odd)."""
    block = (config or {}).get("distributed")
    try:
        return max(0, int(block.get("processes") or 0)) if isinstance(block, Mapping) else 0
    except (TypeError, ValueError):
        return 0


def configured_processes(run_dir: Path) -> int:
    """``configured`` of the run's config.json: fixed for the run's life, so views may keep it."""
    config = read_json(Path(run_dir) / "config.json")
    return configured(config if isinstance(config, dict) else None)


def run_process_count(run_dir: Path, devices: Iterable[str]) -> int:
    """``process_count`` of the run in ``run_dir`` (its config.json)."""
    return processes_for(configured_processes(run_dir), devices)


def torchrun_command(program: list[str], processes: int) -> list[str]:
    """torchrun starting ``processes`` copies of ``program`` (``-m engine``, or a script path) with
    this interpreter; ``--standalone`` picks a free rendezvous port, so runs never collide."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc-per-node", str(processes), *program]


def devices_label(devices: Iterable[str], processes: int = 1) -> str:
    """How a run's devices read in tables: "0,1"; "cpu ×2" for two CPU ranks."""
    devices = [str(d) for d in devices]
    label = ",".join(devices)
    if processes > 1 and len(devices) != processes:
        return f"{label} ×{processes}"
    return label


# --------------------------------------------------------------------------- the ranks' processes


@dataclass(frozen=True)
class RankProcess:
    rank: int | None  # None when its environment could not be read
    pid: int
    start: float  # psutil create_time: a reused pid never matches

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, data: Any) -> RankProcess | None:
        if not isinstance(data, dict):
            return None
        try:
            rank = data.get("rank")
            return cls(None if rank is None else int(rank), int(data["pid"]), float(data["start"]))
        except (KeyError, TypeError, ValueError):
            return None


def find_ranks(launcher_pid: int) -> list[RankProcess]:
    """The rank processes torchrun ``launcher_pid`` has started so far (its children)."""
    import psutil

    found: list[RankProcess] = []
    try:
        children = psutil.Process(launcher_pid).children()
    except (psutil.Error, OSError):
        return []
    for child in children:
        try:
            env = child.environ()
            rank = int(env["RANK"]) if "RANK" in env else None
            found.append(RankProcess(rank, child.pid, child.create_time()))
        except (psutil.Error, OSError, ValueError):
            continue
    return _in_rank_order(found)


def merge_sightings(known: Iterable[RankProcess], found: Iterable[RankProcess]) -> list[RankProcess]:
    """The ranks to record after a new look at torchrun's children (``found``, from ``find_ranks``).

    A named rank stays once seen: after torchrun is gone the record is the only way to reach it.
    A child without a RANK counts only while torchrun still has it: it is a rank between its fork
    and its exec (a later look names it, same pid and start) or a short-lived helper of torchrun's
    own; importing torch runs ``/sbin/ldconfig -p`` (ctypes.util.find_library), which a look during
    torchrun's start-up catches. Kept, such a helper stayed in run.json as an extra, unnamed "rank"
    for the whole attempt. A named rank is never replaced by an unnamed sighting of itself (an
    exiting process's environment reads empty)."""
    merged = {(r.pid, r.start): r for r in known if r.rank is not None}
    for rank in found:
        key = (rank.pid, rank.start)
        if rank.rank is not None or key not in merged:
            merged[key] = rank
    return _in_rank_order(merged.values())


def _in_rank_order(found: Iterable[RankProcess]) -> list[RankProcess]:
    return sorted(found, key=lambda r: (r.rank is None, r.rank or 0, r.pid))


def recorded_ranks(run_dir: Path) -> list[RankProcess]:
    info = read_json(Path(run_dir) / "run.json")
    entries = info.get(RANKS_KEY) if isinstance(info, dict) else None
    ranks = [RankProcess.from_json(e) for e in entries or []]
    return [r for r in ranks if r is not None]


def group_alive(pid: int | None, start: float | None, pgid: int | None = None) -> bool:
    """Does the process group led by the recorded process ``pid`` still hold a live process?

    While the leader is the recorded process the group is alive; once it is gone, surviving members
    (data-loader workers) still hold the group, and the kernel never hands out a pid while a group
    of that id exists, so a pid that now belongs to another process proves the old group is gone.
    """
    if not pid or start is None:
        return False
    if process_alive(pid, start):
        return True
    pgid = pgid or pid
    if process_start_time(pgid) is not None:
        return False  # the id belongs to another process now: the old group is gone
    try:
        os.killpg(pgid, 0)  # signal 0: an existence check, nothing is delivered
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return group_has_live_member(pgid)  # exited members waiting to be reaped hold nothing


def ranks_alive(run_dir: Path, boot: str | None = None) -> bool:
    """Is any recorded rank of the run (or what is left of its group) still alive on this boot?"""
    if boot and boot_id() not in (None, boot):
        return False
    return any(group_alive(r.pid, r.start) for r in recorded_ranks(run_dir))


def signal_ranks(ranks: Iterable[RankProcess], sig: int) -> list[RankProcess]:
    """Send ``sig`` to the groups of the ranks that are still alive; the ranks signalled."""
    hit: list[RankProcess] = []
    for rank in ranks:
        if not group_alive(rank.pid, rank.start):
            continue
        try:
            os.killpg(rank.pid, sig)  # torchrun makes each rank the leader of its own session
            hit.append(rank)
        except (ProcessLookupError, PermissionError):
            continue
    return hit


# --------------------------------------------------------------------------- which rank failed


@dataclass(frozen=True)
class RankFailure:
    rank: int
    exit_code: int  # negative: killed by that signal
    pid: int
    root: bool  # torchrun's "Root Cause (first observed failure)"


def parse_failures(text: str) -> list[RankFailure]:
    """The ranks in torchrun's last failure summary of ``text`` (empty without one)."""
    start = text.rfind(f"{TORCHRUN_FAILED}:")
    if start < 0:
        return []
    summary = text[start:]
    root_at = summary.find("Root Cause")
    return [
        RankFailure(int(m.group("rank")), int(m.group("code")), int(m.group("pid")), 0 <= root_at < m.start())
        for m in FAILURE_ENTRY.finditer(summary)
    ]


def culprit(failures: list[RankFailure]) -> RankFailure | None:
    """The rank that brought the run down.

    torchrun stops the other ranks with SIGTERM once one fails, so those are consequences. A rank
    killed by any other signal is a cause (a peer's failure never kills a process). Otherwise
    torchrun's root cause, whose time has only a resolution of a second: on a tie it names the
    lowest rank, though a rank whose collective broke because a peer died fails in the same second.
    """
    causes = [f for f in failures if f.exit_code != -signal.SIGTERM] or failures
    killed = [f for f in causes if f.exit_code < 0]
    roots = [f for f in causes if f.root]
    return (killed or roots or causes or [None])[0]


def failure_reason(
    run_dir: Path,
    stderr_offset: int = 0,
    rank_offsets: Mapping[int, int] | None = None,
    *,
    engine_error: str | None = None,
) -> str | None:
    """The failing rank and its last stderr lines ("rank 1 failed (exit code 1): ..."), from what
    this attempt wrote (logs
    are appended across resumes: ``*_offset`` are their sizes when it started); None when torchrun
    reported no failed rank. ``engine_error``: the engine's own error (rank 0's run_finished), which
    says more than rank 0's stderr when rank 0 is the one that failed (its tail may be nothing but
    torchrun's OMP_NUM_THREADS banner)."""
    text = read_from(Path(run_dir) / "stderr.log", stderr_offset)
    failure = culprit(parse_failures(text))
    if failure is None:
        return None
    if failure.exit_code < 0:
        name = signal.Signals(-failure.exit_code).name
        what = f"rank {failure.rank} was killed by {name} (not sent by mdtui)"
    else:
        what = f"rank {failure.rank} failed (exit code {failure.exit_code})"
    if failure.rank == 0 and engine_error:
        return f"{what}: {engine_error}"
    if failure.rank == 0:
        lines = rank0_lines(text)
    else:
        offset = (rank_offsets or {}).get(failure.rank, 0)
        lines = read_from(rank_log(run_dir, failure.rank), offset).splitlines()
    tail = [ln.rstrip() for ln in lines if ln.strip() and not TORCHRUN_BANNER.match(ln)][-TAIL_LINES:]
    return f"{what}: {' | '.join(tail)}" if tail else what


def rank0_lines(text: str) -> list[str]:
    """Rank 0's own lines in stderr.log: without torchrun's log lines and its closing traceback,
    the supervisor's lines, and torchrun's banner."""
    cut = text.rfind(TORCHRUN_FAILED)
    if cut >= 0:
        head = text.rfind("Traceback (most recent call last):", 0, cut)
        text = text[: head if head >= 0 else cut]
    return [
        ln
        for ln in text.splitlines()
        if not TORCHRUN_LOG.match(ln) and not ln.startswith("[mdtui.") and not ln.startswith("*****")
    ]


def rank_log(run_dir: Path, rank: int) -> Path:
    """Where rank ``rank`` writes its stdout and stderr (rank 0: stderr.log; DDP contract)."""
    return Path(run_dir) / ("stderr.log" if rank == 0 else f"stderr.rank{rank}.log")


def log_sizes(run_dir: Path) -> dict[int, int]:
    """The sizes of the ranks' logs k > 0 now (an attempt reads only what it appended)."""
    sizes: dict[int, int] = {}
    for path in Path(run_dir).glob("stderr.rank*.log"):
        suffix = path.name[len("stderr.rank") : -len(".log")]
        if suffix.isdigit():
            sizes[int(suffix)] = file_size(path)
    return sizes


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int, limit: int = 65536) -> str:
    """The text of ``path`` after ``offset`` (its last ``limit`` bytes at most); "" if unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(offset, size - limit) if offset <= size else 0)
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
