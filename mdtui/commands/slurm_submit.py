"""`mdtui run` / `mdtui queue add` with the Slurm launcher: every run becomes an sbatch job at once.

Slurm queues and schedules; mdtui holds nothing back (no local queue, no ledger). Upstreams (``from``)
are submitted first and their dependants wait on them with ``--dependency=afterok``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mdtui.commands.common import console, fail, print_json, usage_error
from mdtui.execution.slurm import ResubmitRefused, SlurmLauncher, SubmitError
from mdtui.runs.prepare import RunSetupError, dependency_order, seeds_of
from mdtui.system import slurm as slurm_cli

if TYPE_CHECKING:
    from mdtui.registry.spec import Experiment, Plan
    from mdtui.runs.store import RunRecord, RunStore

LAUNCHER_HELP = 'Where the runs execute: "local" or "slurm" (default: [settings] launcher).'


def chosen_launcher(plan: Plan, flag: str | None) -> str:
    """``--launcher`` if given, else ``[settings] launcher``; a wrong value exits 2."""
    name = flag if flag is not None else plan.settings.launcher
    if name not in ("local", "slurm"):
        usage_error(f'--launcher must be "local" or "slurm", not {name!r}')
    if name == "slurm" and not slurm_cli.available():
        usage_error(
            "launcher slurm: sbatch is not on PATH; run mdtui on a machine of the Slurm cluster, "
            "or use --launcher local"
        )
    return name


def submit(plan: Plan, store: RunStore, exps: list[Experiment], *, device: str | None) -> list[RunRecord]:
    """Submit one job per seed of each experiment, upstreams first."""
    if device:
        usage_error("--device picks local devices; with --launcher slurm, Slurm picks them (use gpus = N)")
    launcher = SlurmLauncher.for_plan(store, plan)
    records = []
    for exp in dependency_order(plan, exps):
        for seed in seeds_of(exp):
            try:
                records.append(launcher.submit_new(plan, exp, seed=seed))
            except RunSetupError as exc:
                usage_error(str(exc))
            except SubmitError as exc:
                fail(str(exc))
    return records


def resume(plan: Plan, store: RunStore, rec: RunRecord) -> RunRecord:
    launcher = SlurmLauncher.for_plan(store, plan)
    try:
        launcher.resume(rec)
    except ResubmitRefused as exc:
        usage_error(str(exc))
    except SubmitError as exc:
        fail(str(exc))
    return store.get(rec.run_id) or rec


def print_submitted(records: list[RunRecord], as_json: bool) -> None:
    if as_json:
        print_json([r.to_json() for r in records])
        raise typer.Exit(0)
    for rec in records:
        console.print(
            f"submitted {rec.run_id}  {rec.experiment}  seed {rec.seed}  Slurm job {rec.job_id}  "
            f"script {rec.run_dir / 'job.sbatch'}",
            soft_wrap=True,
            markup=False,
        )
    raise typer.Exit(0)
