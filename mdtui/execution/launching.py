"""What every backend promises: the ``Launcher`` protocol, its one exception family and its flags.

A backend is where runs execute: this machine (``mdtui.execution.launcher.LocalLauncher``, one
detached supervisor per run) or a Slurm cluster (``mdtui.execution.slurm.SlurmLauncher``, one sbatch
job per run). Callers never ask which one they hold: they use the verbs below, catch
``LaunchError`` and read the capability flags. Which backend a plan or a run uses is decided in
``mdtui.execution.backends`` only.

Capabilities (class attributes, so they can be read without an instance):

* ``queues_itself``: the backend holds a run until it can start (Slurm's queue); mdtui's own queue
  and device ledger are not used, and a new run is handed over at once;
* ``places_devices``: mdtui picks the devices (``--device``, the ledger); else the backend does.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunRecord, RunStore


class LaunchError(Exception):
    """A start, resume or stop the backend could not do; the message is for the user."""


class LaunchRefused(LaunchError):
    """Must not happen now (the run is live, completed, has no last.pt, the backend is unusable
    here); the message says why and what to do. A user mistake: the CLI exits 2."""


class NoDevice(LaunchError):
    """No device fits the run now (the ledger's reason is in the message); queueing it would wait."""


class SubmitError(LaunchError):
    """The backend refused the run (sbatch said no); the message is the backend's."""


class StopDeferred(LaunchError):
    """The stop is recorded (the run's stop request) but the backend could not be told now (Slurm's
    controller does not answer); the message says what applies it and what to do. Nothing was
    cancelled yet: the CLI exits 1."""


class StopTarget(str, Enum):
    """What a stop reaches, for a run that has anything to stop."""

    LIVE = "live"  # its supervisor (and engine) run
    ORPHAN = "orphan"  # its supervisor vanished but its engine still runs
    PENDING = "pending"  # the backend holds it and it never started: cancelling it is enough


def on_cluster(rec: RunRecord) -> bool:
    """Was this run handed to a cluster scheduler (it has a job id)? The one place a record's backend
    is read from its fields; ``mdtui.execution.backends.launcher_of`` turns it into a launcher."""
    return bool(rec.job_id)


class Launcher(Protocol):
    """The verbs every backend honours, with the same arguments and return types."""

    name: ClassVar[str]
    queues_itself: ClassVar[bool]
    places_devices: ClassVar[bool]
    store: RunStore
    grace: float

    def configure(self, settings: object) -> None:
        """Take ``[settings]`` (stop grace, policies, backend options), e.g. after a reload."""

    def start_new(
        self,
        plan: Plan,
        exp: Experiment,
        *,
        seed: int,
        devices: list[str] | None = None,
        cpu_always: bool = True,
    ) -> RunRecord:
        """Create a run of ``exp`` and hand it to the backend; the run's record as now indexed.
        Raises ``NoDevice`` (nothing fits now), ``SubmitError``, ``LaunchRefused`` or
        ``mdtui.runs.prepare.RunSetupError`` (the run cannot be prepared)."""

    def submit(self, run_id: str, devices: list[str]) -> RunRecord:
        """Hand an existing run (devices already reserved when ``places_devices``) to the backend."""

    def resume(self, rec: RunRecord, devices: list[str] | None = None) -> RunRecord:
        """Run a stopped / failed / lost run again in its own directory from ``last.pt``."""

    def poll(self, run_id: str) -> str:
        """The run's status (a ``RunStatus`` value) after bringing the index up to date."""

    def stop_target(self, rec: RunRecord) -> StopTarget | None:
        """What ``stop`` would reach for this run; None when there is nothing to stop."""

    def stop(self, run_id: str, *, wait: bool = False, grace: float | None = None) -> bool:
        """Ask the run to stop (it saves last.pt), killed after the grace. True if anything was
        signalled or cancelled; ``StopDeferred`` when the stop is only recorded for later."""

    def kill(self, run_id: str) -> bool:
        """Stop the run now, without a grace period. True if signalled."""

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Block until the run has ended and whoever ends it has written everything; True if so."""

    def where(self, run_id: str) -> tuple[str, list[str]]:
        """(host, devices) the run executes on."""
