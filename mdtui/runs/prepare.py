"""From an experiment to a run directory ready to launch: upstream checkpoints, caches, ordering.

Shared by ``mdtui run`` / ``mdtui demo`` and the scheduler, so a queued run and a direct run resolve
``from`` the same way: the upstream experiment's latest *completed* run's ``checkpoints/best.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.runs.status import RunStatus

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunRecord, RunStore


class RunSetupError(Exception):
    """A run cannot be prepared (its upstream has no completed run, ...): a user-facing message."""


def upstream_checkpoint(store: RunStore, exp: Experiment) -> str | None:
    """Absolute path of the upstream's best checkpoint, None without ``from``; RunSetupError if missing."""
    if not exp.upstream:
        return None
    upstream = store.latest_completed(exp.upstream)
    if upstream is None:
        raise RunSetupError(
            f'experiment "{exp.name}" starts from "{exp.upstream}", which has no completed run yet; '
            f'run it first (`mdtui run "{exp.upstream}"`), or run both in one command '
            f'(`mdtui run "{exp.upstream}" "{exp.name}"` runs them in order)'
        )
    best = Path(upstream.run_dir) / "checkpoints" / "best.pt"
    if not best.is_file():
        raise RunSetupError(
            f'experiment "{exp.name}" starts from "{exp.upstream}", but its latest completed run '
            f"{upstream.run_id} has no checkpoint at {best}"
        )
    return str(best)


def combine_path(store: RunStore, exp: Experiment) -> str | None:
    """The mask artifacts directory of ``doctor.mask.combine_with``'s latest completed run, if set."""
    doctor = exp.config.get("doctor")
    mask = doctor.get("mask") if isinstance(doctor, dict) else None
    other = mask.get("combine_with") if isinstance(mask, dict) else None
    if not other:
        return None
    rec = store.latest_completed(str(other))
    if rec is None:
        raise RunSetupError(
            f'experiment "{exp.name}" combines its masks with "{other}" (doctor.mask.combine_with), '
            f"which has no completed run yet; run it first"
        )
    return str(Path(rec.run_dir) / "artifacts")


def cache_dir(store: RunStore) -> str:
    """Where sibling runs share computed masks (keyed by checkpoint + settings inside the engine)."""
    return str(Path(store.runs_dir) / "cache")


def require_data(plan: Plan, exp: Experiment) -> None:
    """Pre-flight: RunSetupError, before any run exists, when ``exp``'s dataset is not in place
    (``mdtui.registry.data_presence``: by paths, with the fix in the message). Every path that
    creates or queues runs calls it first: ``create_run_for`` and ``scheduling.queue.add``."""
    from mdtui.registry.data_presence import data_problem

    problem = data_problem(exp, plan.settings)
    if problem is not None:
        raise RunSetupError(problem.message)


def create_run_for(
    plan: Plan,
    store: RunStore,
    exp: Experiment,
    *,
    seed: int,
    devices: list[str],
    status: str = RunStatus.CREATED.value,
    extra: dict[str, Any] | None = None,
) -> RunRecord:
    """Resolve the engine config of ``exp`` for ``seed`` and create its run directory."""
    from mdtui.registry.plan import engine_config

    require_data(plan, exp)
    init = upstream_checkpoint(store, exp)
    kwargs: dict[str, Any] = {}
    combined = combine_path(store, exp)
    if combined is not None:
        kwargs["combine_path"] = combined
    run_id = store.new_run_id()
    config = engine_config(
        plan, exp, run_id=run_id, seed=seed, init_checkpoint=init, cache_dir=cache_dir(store), **kwargs
    )
    return store.create_run(
        exp, config, seed=seed, devices=devices, status=status, run_id=run_id, extra=extra
    )


def dependency_order(plan: Plan, exps: list[Experiment]) -> list[Experiment]:
    """``exps`` with every upstream (``from``) among them placed before its dependants, else file order."""
    chosen = {e.name: e for e in exps}
    ordered: list[Experiment] = []
    seen: set[str] = set()

    def visit(exp: Experiment, path: tuple[str, ...]) -> None:
        if exp.name in seen or exp.name in path:  # cycles are rejected by validation already
            return
        if exp.upstream and exp.upstream in chosen:
            visit(chosen[exp.upstream], (*path, exp.name))
        seen.add(exp.name)
        ordered.append(exp)

    for exp in exps:
        visit(exp, ())
    return ordered


def seeds_of(exp: Experiment) -> tuple[int, ...]:
    return tuple(exp.seeds) or (0,)
