"""Giving disk back: which checkpoints of finished runs can go (``mdtui gc``), and removing whole
runs (``mdtui rm``).

What is never touched:

* anything of a run that is not finished (starting, running, queued, blocked): its processes or its
  launch still need its folder;
* the ``best.pt`` that an experiment's ``from`` resolves to (the upstream's latest *completed* run,
  as ``mdtui.runs.prepare.upstream_checkpoint`` resolves it): its next run starts from it;
* a checkpoint a live or waiting run was started from (its ``config.json`` ``init_checkpoint``):
  a newer upstream run may have completed since, but a resume of that run reloads its config;
* the resume point (``last.pt``) of a stopped, failed or lost run, unless asked (``resumable``).

RESULTS.md is the lab notebook and is never edited: a removed run's entry stays there (its numbers
were real); the index and the run folder go, so ``mdtui status``, ``report`` and the TUI forget it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mdtui.runs.disk import file_size, tree_size
from mdtui.runs.status import FINISHED, INCOMPLETE, RunStatus
from mdtui.system.fs import read_json

if TYPE_CHECKING:
    from mdtui.registry.plan import Plan
    from mdtui.runs.store import RunRecord, RunStore

CHECKPOINTS = ("best.pt", "last.pt")
# --keep: which of a finished run's two checkpoints stay
KEEP = {"best": ("best.pt",), "last": ("last.pt",), "both": CHECKPOINTS, "none": ()}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Checkpoint:
    run_id: str
    experiment: str
    path: Path
    size: int


@dataclass(frozen=True)
class Protected:
    path: Path
    why: str


@dataclass(frozen=True)
class GcPlan:
    free: tuple[Checkpoint, ...]  # what goes
    kept: tuple[Protected, ...]  # what --keep would have freed, kept because something needs it

    @property
    def total(self) -> int:
        return sum(c.size for c in self.free)


def parse_age(text: str) -> float:
    """``14d`` / ``12h`` / ``30m`` / ``2w`` / ``90s`` -> seconds; ValueError with what is expected."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f'"{text}" is not an age; expected a number and a unit, e.g. 14d, 12h, 30m, 2w')
    return float(match.group(1)) * _AGE_SECONDS[match.group(2)]


def needed_checkpoints(store: RunStore, plan: Plan) -> dict[Path, str]:
    """Checkpoints something still needs -> why (see the module's docstring)."""
    needed: dict[Path, str] = {}
    for exp in plan.experiments.values():
        if not exp.upstream:
            continue
        upstream = store.latest_completed(exp.upstream)
        if upstream is not None:
            best = Path(upstream.run_dir) / "checkpoints" / "best.pt"
            needed.setdefault(best, f'"{exp.name}" starts from it (from = "{exp.upstream}")')
    for rec in store.list_runs(statuses=[s for s in RunStatus if s not in FINISHED]):
        init = (read_json(Path(rec.run_dir) / "config.json") or {}).get("init_checkpoint")
        if isinstance(init, str) and init:
            needed.setdefault(Path(init), f"{rec.status} run {rec.run_id} ({rec.experiment}) started from it")
    return needed


def plan_gc(
    store: RunStore,
    plan: Plan,
    *,
    keep: str = "best",
    older_than: float | None = None,
    resumable: bool = False,
    now: float,
) -> GcPlan:
    """What ``mdtui gc`` frees: the checkpoints ``keep`` does not keep, of finished runs that ended
    more than ``older_than`` seconds ago, minus what something needs."""
    kept_names = KEEP[keep]
    needed = needed_checkpoints(store, plan)
    free: list[Checkpoint] = []
    kept: list[Protected] = []
    for rec in store.list_runs(statuses=FINISHED):
        ended = rec.ended_t or rec.created_t
        if older_than is not None and now - ended < older_than:
            continue
        folder = Path(rec.run_dir) / "checkpoints"
        for name in CHECKPOINTS:
            path = folder / name
            if name in kept_names or not path.is_file():
                continue
            if path in needed:
                kept.append(Protected(path, needed[path]))
            elif name == "last.pt" and rec.status in INCOMPLETE and not resumable:
                kept.append(
                    Protected(
                        path, f"the resume point of {rec.status} run {rec.run_id} (--resumable frees it)"
                    )
                )
            else:
                free.append(Checkpoint(rec.run_id, rec.experiment, path, file_size(path)))
    return GcPlan(tuple(free), tuple(kept))


def free_checkpoints(items: tuple[Checkpoint, ...]) -> int:
    """Delete ``items``; returns the bytes freed (a file already gone frees nothing)."""
    freed = 0
    for item in items:
        try:
            os.unlink(item.path)
        except FileNotFoundError:
            continue
        freed += item.size
    return freed


def run_size(rec: RunRecord) -> int:
    return tree_size(rec.run_dir)


def remove_run(store: RunStore, rec: RunRecord) -> int:
    """Delete a finished run: its run.json first (a crash then leaves a folder ``reindex`` ignores),
    its index row, then the folder. Returns the bytes the folder held. The caller checks it is
    finished; the index refuses to forget a run that is not."""
    run_dir = Path(rec.run_dir)
    size = tree_size(run_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(run_dir / "run.json")
    store.delete_runs([rec.run_id])
    # the experiment's folder stays, even empty: a run being created in it must not lose it
    shutil.rmtree(run_dir, ignore_errors=True)
    return size
