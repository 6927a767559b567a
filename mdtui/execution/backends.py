"""Which backend runs a plan's new runs, and which one holds an existing run: decided here only.

``launcher_for`` reads ``[settings] launcher`` (or ``--launcher``) for runs about to start;
``launcher_of`` reads a run's record for a run that exists (stop it, poll it). Everything above
``mdtui.execution`` gets its launcher from these two and talks to it through the ``Launcher``
protocol (``mdtui.execution.launching``), never by comparing backend names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdtui.execution.launcher import LocalLauncher
from mdtui.execution.launching import Launcher, LaunchRefused, on_cluster
from mdtui.execution.slurm import SlurmLauncher
from mdtui.registry.slurm_options import LAUNCHERS
from mdtui.system import slurm as slurm_cli

if TYPE_CHECKING:
    from mdtui.registry.plan import Plan
    from mdtui.runs.store import RunRecord, RunStore

BACKENDS: dict[str, type[LocalLauncher] | type[SlurmLauncher]] = {
    LocalLauncher.name: LocalLauncher,
    SlurmLauncher.name: SlurmLauncher,
}
assert set(BACKENDS) == set(LAUNCHERS), "every launcher name [settings] accepts has a backend"
QUOTED = " or ".join(f'"{name}"' for name in LAUNCHERS)
# \\[ keeps Rich's markup in --help from reading [settings] as a tag (it printed "(default:  launcher)")
LAUNCHER_HELP = f"Where the runs execute: {QUOTED} (default: \\[settings] launcher)."


def backend_for(plan: Plan | None, flag: str | None = None) -> type[LocalLauncher] | type[SlurmLauncher]:
    """The backend class ``--launcher`` (else ``[settings] launcher``, else local) names; its
    capability flags can be read without a store. ``LaunchRefused`` for an unknown name, or for a
    cluster backend whose commands are not on PATH here."""
    name = flag if flag is not None else (plan.settings.launcher if plan is not None else LocalLauncher.name)
    backend = BACKENDS.get(name)
    if backend is None:
        raise LaunchRefused(f"--launcher must be {' or '.join(map(repr, LAUNCHERS))}, not {name!r}")
    if backend.queues_itself and not slurm_cli.available():
        raise LaunchRefused(
            f"launcher {name}: sbatch is not on PATH; run mdtui on a machine of the Slurm cluster, "
            f"or use --launcher {LocalLauncher.name}"
        )
    return backend


def launcher_for(store: RunStore, plan: Plan | None, flag: str | None = None) -> Launcher:
    """The launcher new runs of ``plan`` go to (``--launcher`` overrides ``[settings] launcher``)."""
    return backend_for(plan, flag).for_plan(store, plan)


def launcher_of(store: RunStore, rec: RunRecord, plan: Plan | None = None) -> Launcher:
    """The launcher that holds ``rec`` (its stop, kill and poll go there), with ``plan``'s grace."""
    backend = SlurmLauncher if on_cluster(rec) else LocalLauncher
    return backend.for_plan(store, plan)


def queue_launcher(store: RunStore, plan: Plan | None = None) -> Launcher:
    """The launcher mdtui's own queue (the scheduler) feeds: the backend that does not queue itself."""
    return LocalLauncher.for_plan(store, plan)
