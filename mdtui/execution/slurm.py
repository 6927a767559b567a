"""The Slurm launcher: runs as sbatch jobs that run the same supervisor on a cluster node.

``[settings] launcher = "slurm"`` (or ``--launcher slurm``) sends runs here instead of to the local
supervisor. ``submit`` writes ``RUN_DIR/job.sbatch`` (kept: the user can read and re-run it) whose job
``exec``s ``python -m mdtui.execution.supervise RUN_DIR`` on the node, then ``sbatch --parsable``; the
job id is stored with the run (index column ``job_id``, run.json). The run directory, events,
checkpoints, ``exit.json`` and the RESULTS.md entry are exactly those of a local run, written by that
supervisor on the cluster's shared filesystem.

Slurm schedules; mdtui observes: what Slurm says is read into the index by
``mdtui.execution.slurm_status`` (one query per poll, from ``reconcile``). The node-side half (devices Slurm granted, automatic resume on requeue, the time-limit warning) is
``mdtui.execution.slurm_job``; the Slurm commands themselves are ``mdtui.system.slurm``.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.execution import slurm_job, supervise
from mdtui.execution.ending import SLURM_TERM, STOP_REQUEST, end_unstarted
from mdtui.execution.launching import LaunchRefused, StopDeferred, StopTarget, SubmitError
from mdtui.execution.reconcile import reconcile
from mdtui.execution.slurm_status import POLLED, requeued
from mdtui.registry.slurm_options import SlurmOptions
from mdtui.registry.spec import STOP_GRACE_SECONDS
from mdtui.runs.prepare import create_run_for
from mdtui.runs.rundir import EXIT_FILE
from mdtui.runs.status import RunStatus
from mdtui.system import slurm as slurm_cli
from mdtui.system.fs import atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment, Plan
    from mdtui.runs.store import RunRecord, RunStore

SCRIPT_NAME = "job.sbatch"
SUPERVISOR_MODULE = supervise.__name__  # the job runs the same supervisor as a local run


__all__ = ["SlurmLauncher", "SubmitError"]


# --------------------------------------------------------------------------- the job script


@dataclass(frozen=True)
class JobSpec:
    """Everything a run's job script depends on."""

    run_dir: Path
    job_name: str
    options: SlurmOptions
    gpus: int = 1
    nodes: int = 1
    processes: int = 0  # distributed.processes (0: one per GPU)
    dependency: tuple[str, ...] = ()  # upstream job ids (afterok)
    workdir: Path | None = None  # where the job starts (the experiments file's directory)
    grace: float = STOP_GRACE_SECONDS  # the supervisor's stop grace (SIGTERM -> SIGKILL of the engine)


def sbatch_lines(spec: JobSpec) -> list[str]:
    """The ``#SBATCH`` lines of a run's job."""
    o = spec.options
    run_dir = spec.run_dir
    args: list[str] = [
        f"--job-name={spec.job_name}",
        f"--output={run_dir}/slurm-%j.out",
        f"--error={run_dir}/slurm-%j.err",
        "--open-mode=append",  # a requeued job appends to the same files
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",  # one supervisor (node 0) / one torchrun per node
        "--requeue",  # preemption and node failure rerun the job; it resumes from last.pt
    ]
    if spec.gpus > 0:
        args.append(f"--gres=gpu:{spec.gpus}")
    for key in ("partition", "account", "qos", "time", "mem", "constraint"):
        value = getattr(o, key)
        if value is not None:
            args.append(f"--{key}={value}")
    if o.cpus_per_gpu is not None:
        args.append(f"--cpus-per-gpu={o.cpus_per_gpu}")
    if o.cpus_per_task is not None:
        args.append(f"--cpus-per-task={o.cpus_per_task}")
    if o.signal_seconds > 0:
        # B: to the batch shell only, which is the supervisor (exec): it stops the engine itself
        args.append(f"--signal=B:TERM@{o.signal_seconds}")
    if spec.dependency:
        args.append("--dependency=afterok:" + ":".join(spec.dependency))
        args.append("--kill-on-invalid-dep=no")  # a failed upstream leaves it pending: "blocked"
    args.extend(o.extra)
    return [f"#SBATCH {shlex.quote(a)}" for a in args]


def job_script(spec: JobSpec) -> str:
    """The whole job script: #SBATCH lines, the user's setup lines, then the supervisor."""
    o = spec.options
    run_dir = shlex.quote(str(spec.run_dir))
    limit = o.time_limit_seconds()
    lines = [
        "#!/bin/bash",
        f"# written by mdtui for the run in {spec.run_dir}; `sbatch {SCRIPT_NAME}` re-runs it",
        *sbatch_lines(spec),
        "",
        "set -e",
    ]
    if spec.workdir is not None:
        lines.append(f"cd {shlex.quote(str(spec.workdir))}")
    if o.setup:
        lines += ["# [settings.slurm] setup", *o.setup]
    lines += [
        f"export {slurm_job.ENV_FLAG}=1",
        f"export {slurm_job.ENV_STARTED}=$(date +%s)",
        f"export {slurm_job.ENV_LIMIT}={limit if limit is not None else ''}",
        f"export {slurm_job.ENV_SIGNAL}={o.signal_seconds}",
        # what is left of the job's time (the partition's default limit too; UNLIMITED without one)
        f'export {slurm_job.ENV_LEFT}="$(squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null || true)"',
        f"export MDTUI_STOP_GRACE={spec.grace:g}",
    ]
    python = shlex.quote(interpreter(o))
    lines += [
        "# a run that completed is never trained again (its best.pt stays as it is)",
        f"{python} -m {slurm_job.__name__} guard {run_dir}",
    ]
    if spec.nodes > 1:
        lines += _multi_node_lines(spec)
    lines.append(f"exec {python} -m {SUPERVISOR_MODULE} {run_dir}")
    return "\n".join(lines) + "\n"


def interpreter(options: SlurmOptions) -> str:
    """The Python the job runs: the ``python`` option, else the one mdtui itself runs under (a
    virtual environment's interpreter works without activating it, also when the script is
    re-run by hand)."""
    return options.python or sys.executable


def _multi_node_lines(spec: JobSpec) -> list[str]:
    """M nodes: the supervisor (on the first node) runs one torchrun per node through srun, which
    meet at a c10d rendezvous on the first node; the engine's ranks span the whole allocation."""
    per_node = spec.processes if spec.processes > 0 else max(1, spec.gpus)
    # slurm_job's torchrun helper adds each node's routable address and the first node's endpoint
    torchrun = (
        f"{shlex.quote(interpreter(spec.options))} -m {slurm_job.__name__} torchrun --nnodes={spec.nodes} "
        f"--nproc-per-node={per_node} --rdzv-backend=c10d --rdzv-id=$SLURM_JOB_ID -m engine"
    )
    return [
        "# nodes > 1: srun starts one torchrun per node; they rendezvous on the first node",
        f'export {slurm_job.ENV_MULTI_NODE}="srun --kill-on-bad-exit=1 --ntasks-per-node=1 {torchrun}"',
    ]


# --------------------------------------------------------------------------- the launcher


class SlurmLauncher:
    """Submits runs as sbatch jobs; polls, stops and kills them through Slurm."""

    name = "slurm"
    queues_itself = True  # Slurm holds each job until it can run: no mdtui queue, no ledger
    places_devices = False  # Slurm grants the GPUs (gpus = N asks for them)

    def __init__(
        self, store: RunStore, options: SlurmOptions | None = None, *, grace: float = STOP_GRACE_SECONDS
    ) -> None:
        self.store = store
        self.options = options or SlurmOptions()
        self.grace = grace
        self.plan: Plan | None = None  # the experiments file as it is now (resume takes its options)
        self.time: str | None = None  # `--time`: over every experiment's time limit

    @classmethod
    def for_plan(cls, store: RunStore, plan: Plan | None) -> SlurmLauncher:
        if plan is None:
            return cls(store)
        launcher = cls(store, plan.settings.slurm, grace=plan.settings.stop_grace_seconds)
        launcher.plan = plan
        return launcher

    def options_for(self, experiment: str, recorded: Any = None) -> SlurmOptions:
        """The options a job of ``experiment`` is submitted with: the experiments file's as it is now
        (``[settings.slurm]`` and the experiment's ``slurm`` table; those recorded in run.json when
        the experiment is gone from the file), then ``--time``."""
        exp = self.plan.experiments.get(experiment) if self.plan is not None else None
        opts = self.options.merged(exp.slurm) if exp is not None else _options_from(recorded, self.options)
        return opts.merged({"time": self.time}) if self.time else opts

    def configure(self, settings: object) -> None:
        self.options = getattr(settings, "slurm", None) or self.options
        self.grace = float(getattr(settings, "stop_grace_seconds", self.grace))

    # ------------------------------------------------------------ submitting

    def start_new(
        self,
        plan: Plan,
        exp: Experiment,
        *,
        seed: int,
        devices: list[str] | None = None,
        cpu_always: bool = True,
    ) -> RunRecord:
        """Create a run of ``exp`` and submit it. An upstream (``from``) still in Slurm's hands
        becomes ``--dependency=afterok``; its best.pt is where the dependant will look for it.
        ``devices`` cannot be chosen here (Slurm grants them): ``LaunchRefused``."""
        if devices:
            raise LaunchRefused(
                "--device picks local devices; with --launcher slurm, Slurm picks them (use gpus = N)"
            )
        upstream_job, upstream_dir = self._upstream(exp)
        made = exp if upstream_dir is None else dataclasses.replace(exp, upstream=None)
        rec = create_run_for(plan, self.store, made, seed=seed, devices=[], status=RunStatus.QUEUED.value)
        if upstream_dir is not None:
            config_path = Path(rec.run_dir) / "config.json"
            config = read_json(config_path) or {}
            config["init_checkpoint"] = str(upstream_dir / "checkpoints" / "best.pt")
            atomic_write_json(config_path, config)
            self.store.update_run_json(Path(rec.run_dir), {"upstream": exp.upstream})
        opts = self.options.merged(exp.slurm).merged({"time": self.time} if self.time else {})
        gpus = 0 if exp.config.get("device") == "cpu" else exp.gpus  # a CPU run asks Slurm for no GPU
        processes = int((exp.config.get("distributed") or {}).get("processes") or 0)
        self.store.update_run_json(
            Path(rec.run_dir),
            {
                "launcher": self.name,
                "slurm": {
                    "options": dataclasses.asdict(opts),
                    "gpus": gpus,
                    "nodes": exp.nodes,
                    "processes": processes,
                    "workdir": str(plan.settings.path.parent),
                },
            },
        )
        self.submit(rec.run_id, [], dependency=[upstream_job] if upstream_job else [])
        return self.store.get(rec.run_id) or rec

    def _upstream(self, exp: Experiment) -> tuple[str | None, Path | None]:
        """(job id, run dir) of the upstream's run still with Slurm, else (None, None)."""
        if not exp.upstream or self.store.latest_completed(exp.upstream) is not None:
            return None, None
        for rec in self.store.list_runs(experiment=exp.upstream, statuses=list(POLLED)):
            if rec.job_id:
                return str(rec.job_id), Path(rec.run_dir)
        return None, None

    def submit(self, run_id: str, devices: list[str], *, dependency: list[str] | None = None) -> RunRecord:
        """Write RUN_DIR/job.sbatch and sbatch it; the job id is stored with the run (``job_id``).
        A job sbatch refuses ends the run ``failed`` before it started (``SubmitError``)."""
        rec = self.store.get(run_id)
        if rec is None:
            raise LookupError(f"no run {run_id}")
        run_dir = Path(rec.run_dir)
        info = read_json(run_dir / "run.json") or {}
        recorded = (info.get("slurm") or {}) if isinstance(info.get("slurm"), dict) else {}
        opts = _options_from(recorded.get("options"), self.options)
        spec = JobSpec(
            run_dir=run_dir,
            job_name=f"mdtui:{rec.experiment}:{rec.run_id}"[:200],
            options=opts,
            gpus=int(recorded.get("gpus", max(1, len([d for d in devices if d != "cpu"])))),
            nodes=int(recorded.get("nodes", 1)),
            processes=int(recorded.get("processes", 0)),
            dependency=tuple(dependency or ()),
            workdir=Path(recorded["workdir"]) if recorded.get("workdir") else None,
            grace=self.grace,
        )
        script = run_dir / SCRIPT_NAME
        atomic_write_text(script, job_script(spec))
        try:
            job_id = slurm_cli.sbatch(script, cwd=spec.workdir)
        except slurm_cli.SlurmError as exc:
            end_unstarted(self.store, run_id, RunStatus.FAILED, f"sbatch refused the job: {exc}")
            raise SubmitError(f"sbatch refused the job of run {run_id}: {exc}") from exc
        self.store.begin_attempt(
            run_id, status=RunStatus.QUEUED.value, job_id=job_id, job_state="PENDING", started_t=None
        )
        return self.store.get(run_id) or rec

    def resume(self, rec: RunRecord, devices: list[str] | None = None) -> RunRecord:
        """Submit a stopped / failed / lost run again in its own directory with --resume."""
        if devices:
            raise LaunchRefused("--device picks local devices; with --launcher slurm, Slurm picks them")
        if rec.status in POLLED:
            raise LaunchRefused(f"run {rec.run_id} ({rec.experiment}) is still {rec.status}; stop it first")
        if rec.status == RunStatus.COMPLETED:
            raise LaunchRefused(f"run {rec.run_id} ({rec.experiment}) already completed; nothing to resume")
        run_dir = Path(rec.run_dir)
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise LaunchRefused(
                f"run {rec.run_id} has no checkpoints/last.pt to resume from; start a new run instead"
            )
        for name in (EXIT_FILE, STOP_REQUEST, SLURM_TERM):  # the old ending is not the new one's
            if (run_dir / name).exists():
                (run_dir / name).replace(run_dir / f"{name}.prev")
        self.store.update_run_json(run_dir, {"resume": True})
        recorded = (read_json(run_dir / "run.json") or {}).get("slurm")
        recorded = recorded if isinstance(recorded, dict) else {}
        # today's options, not those of the first submission: more time given to the experiment (or
        # `--time`) is what a run that hit its time limit needs
        options = self.options_for(rec.experiment, recorded.get("options"))
        self.store.update_run_json(
            run_dir, {"launcher": self.name, "slurm": {**recorded, "options": dataclasses.asdict(options)}}
        )
        return self.submit(rec.run_id, list(rec.devices))

    # ------------------------------------------------------------ the rest of the protocol

    def poll(self, run_id: str) -> str:
        rec = self.store.get(run_id)
        if rec is None:
            return RunStatus.LOST.value
        if rec.job_id:  # reconcile converges exit.json first, then asks Slurm (an ended job may be requeued)
            reconcile(self.store)
            rec = self.store.get(run_id) or rec
        return rec.status

    def stop_target(self, rec: RunRecord) -> StopTarget | None:
        """Pending (Slurm holds it, its supervisor never ran): cancelled; live: stopped."""
        if not rec.job_id or rec.status not in POLLED:
            return None
        if _pending(rec):
            return StopTarget.PENDING
        return StopTarget.LIVE

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Until the run has ended (polled through Slurm once a second); True if it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll(run_id) in {s.value for s in POLLED}:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(1.0)
        return True

    def stop(self, run_id: str, *, wait: bool = False, grace: float | None = None) -> bool:
        """Ask the job to stop. Running: SIGTERM to the supervisor (``scancel --signal=TERM``),
        which stops the engine (last.pt) and escalates after the grace itself; if the job is still
        there after the grace, Slurm kills it (``scancel``). Pending (also a requeued job waiting
        for its next attempt): cancelled with a plain scancel, which Slurm accepts in any state.

        ``stop-request.json`` is written first and applies to whatever attempt runs: the supervisor
        reads it itself, so a stop reaches a running attempt even while the controller does not
        answer (True then), and a requeued job that starts again stops at once."""
        rec = self.store.get(run_id)
        if rec is None:
            raise LookupError(f"no run {run_id}")
        if not rec.job_id or rec.status not in POLLED:
            return False
        grace = self.grace if grace is None else grace
        atomic_write_json(
            Path(rec.run_dir) / STOP_REQUEST,
            {"t": time.time(), "grace": float(grace), "by": "mdtui (scancel)"},
        )
        job_id = str(rec.job_id)
        pending = _pending(rec)
        try:
            # what Slurm says now, not the index's last poll: a job requeued since then is pending,
            # and Slurm refuses to signal a pending job (it would run again, stop request unread)
            job = slurm_cli.job_states([job_id]).get(job_id)
            pending = job.state == "PENDING" if job is not None else pending
            if pending and job is not None and not _pending(rec):
                # Slurm requeued the job since the index last looked: the attempt that ran is over,
                # and its ending ("cancelled outside mdtui", for the requeue's SIGTERM) is not the
                # run's. Set aside before the cancel, so that the run ends as this stop says
                requeued(self.store, rec, job)
            if pending:
                return slurm_cli.scancel(job_id)
            # the batch shell is the supervisor: it stops the engine (which gets the TERM too) and
            # records "stopped"; it escalates to SIGKILL after the grace itself
            sent = slurm_cli.scancel(job_id, "TERM")
        except slurm_cli.SlurmUnavailable:
            if not pending:
                return True  # the running attempt's supervisor reads the request itself
            raise StopDeferred(
                f"Slurm is unreachable, so job {job_id} of run {run_id} is not cancelled yet; the stop "
                f"request is recorded in {rec.run_dir} and stops the run as soon as the job starts. "
                "Run `mdtui stop` again when Slurm answers to cancel the job while it waits"
            ) from None
        except slurm_cli.SlurmError:
            # refused: the job went back to pending in between (a requeue): cancel it there
            sent = _scancel(job_id)
        if wait:
            deadline = time.monotonic() + grace + 30
            while time.monotonic() < deadline and self.poll(run_id) in {s.value for s in POLLED}:
                time.sleep(1.0)
            if self.poll(run_id) in {s.value for s in POLLED}:
                _scancel(job_id)
        return sent

    def kill(self, run_id: str) -> bool:
        """Now, without a grace period: Slurm kills every process of the job."""
        rec = self.store.get(run_id)
        if rec is None or not rec.job_id or rec.status not in POLLED:
            return False
        atomic_write_json(
            Path(rec.run_dir) / STOP_REQUEST, {"t": time.time(), "grace": 0.0, "by": "mdtui (scancel)"}
        )
        return _scancel(str(rec.job_id), "KILL")

    def where(self, run_id: str) -> tuple[str, list[str]]:
        rec = self.store.get(run_id)
        if rec is None:
            return "", []
        state = rec.job_state or ""
        node = state.split(" on ", 1)[1].split(",")[0] if " on " in state else ""
        return node, list(rec.devices)


def _pending(rec: RunRecord) -> bool:
    """Does Slurm hold the run's job pending (never started, or requeued and waiting again)?"""
    return rec.status in (RunStatus.QUEUED, RunStatus.BLOCKED) or (rec.job_state or "").startswith("PENDING")


def _scancel(job_id: str, signal: str | None = None) -> bool:
    """scancel (every step and the batch shell); False when Slurm refused, e.g. the job ended."""
    try:
        slurm_cli.scancel(job_id, signal)
    except slurm_cli.SlurmError:
        return False
    return True


def _options_from(recorded: Any, default: SlurmOptions) -> SlurmOptions:
    """The options a run was submitted with (run.json), for resubmission; else ``default``."""
    if not isinstance(recorded, dict):
        return default
    known = {f.name for f in dataclasses.fields(SlurmOptions)}
    return default.merged({k: v for k, v in recorded.items() if k in known})
