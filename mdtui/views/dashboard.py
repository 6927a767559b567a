"""What the TUI shows, computed without any UI: experiments, runs and devices as plain rows.

The TUI calls ``Dashboard.refresh()`` on a timer and renders the immutable ``Snapshot`` it
returns; tests call it directly. Live numbers come from the runs' event streams through
``RunMonitor`` (appended bytes only); everything else from the SQLite index.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (pyproject's oldest): the same parser as the `tomli` package
    import tomli as tomllib

from engine.schema.events import RunState
from mdtui import actions
from mdtui.execution import ranks, slurm_status
from mdtui.execution.backends import launcher_for
from mdtui.execution.launcher import STOP_REQUEST, stop_grace
from mdtui.execution.launching import LaunchError, LaunchRefused, on_cluster
from mdtui.execution.reconcile import reconcile
from mdtui.registry.build import PlanBuilder
from mdtui.registry.plan import ExperimentsError, default_path, find_experiment, knobs, load_plan
from mdtui.runs.rundir import EVENTS_FILE, read_tail_state
from mdtui.runs.status import FINISHED, LIVE, WAITING, RunStatus
from mdtui.runs.store import DB_NAME, RunStore
from mdtui.scheduling import scheduler
from mdtui.system.formats import format_knobs
from mdtui.system.fs import read_json
from mdtui.system.gpus import list_devices
from mdtui.views.monitor import RunMonitor
from mdtui.views.progress import run_eta

# the groups of mdtui.runs.status (a `created` run is not waiting: nothing will start it by itself)
LIVE_STATUSES = LIVE
WAITING_STATUSES = WAITING
DONE_STATUSES = FINISHED
LIVENESS_SECONDS = 2.0  # how often supervisors are checked for having vanished
PARTIAL_PASSES = 8  # experiments.toml with errors: how many rounds of leaving out broken experiments
PLAN_SETTLE_SECONDS = 0.3  # experiments.toml written more recently may be a save still under way


@dataclass(frozen=True)
class ExperimentRow:
    name: str
    group: str
    model: str
    data: str
    loss: str
    knobs: str
    status: str
    best_acc1: float | None  # best of its completed runs only, as RESULTS.md and the reports count
    curve: tuple[float, ...]  # eval acc1 per epoch of the latest run
    latest_run: str | None
    partial_best: float | None = None  # no completed run yet: the best of its latest (unfinished) run


@dataclass(frozen=True)
class RunRow:
    run_id: str
    experiment: str
    status: str
    devices: str
    epoch: str
    loss: float | None
    acc1: float | None
    best: float | None
    elapsed: float | None
    eta: float | None
    queue_pos: int | None
    error: str | None
    reason: str | None = None  # why a queued run waits (from the scheduler)
    stop_deadline: float | None = None  # a stop was asked: when SIGKILL follows (epoch seconds)


@dataclass(frozen=True)
class Snapshot:
    experiments: tuple[ExperimentRow, ...] = ()
    runs: tuple[RunRow, ...] = ()
    devices: tuple[Any, ...] = ()  # mdtui.system.gpus.Device
    holders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # device id -> run ids
    plan_error: str | None = None
    queue_paused: bool = False
    live_count: int = 0
    plan_missing: bool = False  # no experiments.toml at all (an empty folder): not an error to fix
    plan_loads: int = 0  # how many times experiments.toml was read: a change says it was read again
    # "Slurm unreachable — last known state at T" while the controller does not answer (slurm_status)
    slurm_outage: str | None = None


def _block_name(config: dict[str, Any], block: str) -> str:
    value = config.get(block)
    if isinstance(value, dict):
        return str(value.get("name", ""))
    return str(value or "")


def _data_label(config: dict[str, Any]) -> str:
    data = config.get("data")
    if not isinstance(data, dict):
        return str(data or "")
    name = str(data.get("name", ""))
    ratio = data.get("imbalance_ratio")
    return f"{name} ρ={ratio:g}" if isinstance(ratio, (int, float)) and ratio > 1 else name


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def partial_plan(path: Path | None, error: ExperimentsError) -> tuple[Any, tuple[str, ...]]:
    """The plan without the experiment tables that have problems: (plan, left-out table names).

    Only when every problem names an experiment (a broken ``[settings]`` or ``[defaults]`` affects
    them all, a syntax error the whole file); what depends on a left-out table fails to build in the
    next round and is left out too. (None, ()) when that does not converge to a usable plan.
    """
    file = Path(path) if path is not None else default_path()
    issues = list(error.issues)
    try:
        text = file.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None, ()
    tables = doc.get("experiment")
    if not isinstance(tables, dict):
        return None, ()
    left_out: list[str] = []
    for _ in range(PARTIAL_PASSES):
        names = {_table_of(issue.experiment, tables) for issue in issues}
        if not issues or None in names:
            return None, ()
        for name in sorted(names):  # type: ignore[type-var]
            tables.pop(name, None)
            left_out.append(str(name))
        if not tables:
            return None, ()
        try:
            return PlanBuilder(file.resolve(), issues[0].file, text, doc, None).build(), tuple(left_out)
        except ExperimentsError as exc:
            issues = list(exc.issues)
    return None, ()


def _table_of(experiment: str | None, tables: dict[str, Any]) -> str | None:
    """The ``[experiment.X]`` table an issue's experiment comes from (a sweep point names its table)."""
    if experiment is None:
        return None
    if experiment in tables:
        return experiment
    table = experiment.split("[", 1)[0]
    return table if table in tables else None


def latest_per_experiment(records: list[Any]) -> dict[str, Any]:
    """The run each experiment row shows: its newest live run, else its newest run (``records`` newest first).

    A run queued (or failed at once) after a run that is still training must not hide the live one.
    """
    latest: dict[str, Any] = {}
    for rec in records:
        latest.setdefault(rec.experiment, rec)
    for rec in records:
        if rec.status in LIVE and latest[rec.experiment].status not in LIVE:
            latest[rec.experiment] = rec
    return latest


def stop_deadline(run_dir: Path) -> float | None:
    """When SIGKILL follows the stop asked of a live run (its stop request), or None if none was asked."""
    request = read_json(run_dir / STOP_REQUEST)
    if not isinstance(request, dict):
        return None
    try:
        return float(request.get("t") or 0.0) + float(request.get("grace") or 0.0)
    except (TypeError, ValueError):
        return None


class Dashboard:
    """Headless model behind the TUI: plan + store + queue + devices + live event streams."""

    def __init__(self, plan_path: Path | None = None, runs_limit: int = 300) -> None:
        self.plan_path = plan_path
        self.runs_limit = runs_limit
        self.plan: Any = None
        self.plan_error: str | None = None
        self.left_out: tuple[str, ...] = ()  # experiment tables left out of a plan with errors
        self.store: Any = None
        self.monitor = RunMonitor()
        self.started = time.time()
        self._liveness_t = 0.0
        self._index_signature: tuple[Any, ...] = ()
        self._index_cache: tuple[list[Any], dict[str, tuple[int, str | None]], bool] | None = None
        self._knobs: dict[str, str] = {}
        self._processes: dict[str, int] = {}  # run id -> its config's distributed.processes
        self.plan_loads = 0
        self._plan_mark: tuple[int, int] = (-1, -1)  # (size, mtime) as of the last read
        self._plan_seen: tuple[int, int] = (-1, -1)  # a change seen but not yet read (still settling)
        self._pinned: dict[str, Path] = {}  # runs a detail screen shows: followed while it is open
        self._tail_losses: dict[str, tuple[tuple[int, int], float | None]] = {}  # run id -> (stat, loss)
        self.reload_plan()

    # ------------------------------------------------------------------ plan

    def reload_plan(self) -> None:
        """(Re)read experiments.toml; a broken file is shown, never raised.

        When every problem lies inside some ``[experiment.X]`` tables, the others stay usable: the plan
        is built without those tables (and without what extends or comes ``from`` them).
        """
        self.left_out = ()
        self.plan_loads += 1
        self._plan_mark = _stat(self.plan_file())  # before reading: an edit meanwhile is seen next time
        try:
            plan = load_plan(self.plan_path)
        except ExperimentsError as exc:
            self.plan_error = exc.format()
            self.plan, self.left_out = partial_plan(self.plan_path, exc)
            if self.plan is None:
                self._fallback_store()
                return
            self.plan_error += (
                f"\nLeft out until fixed: {', '.join(self.left_out)}. The other experiments can run."
            )
            plan = self.plan
        except (OSError, ValueError) as exc:
            self.plan, self.plan_error = None, str(exc)
            self._fallback_store()
            return
        else:
            self.plan_error = None
        self.plan = plan
        self._knobs = {}
        self._index_cache = None
        if self.store is None or Path(self.store.runs_dir) != Path(plan.settings.runs_dir).resolve():
            self.store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)

    def plan_file(self) -> Path:
        """The experiments.toml this dashboard shows (watched for edits made outside the app)."""
        return Path(self.plan_path if self.plan_path is not None else default_path())

    @property
    def plan_missing(self) -> bool:
        return self._plan_mark == (-1, -1)  # as of the last read: no file there

    def reload_if_changed(self) -> bool:
        """Read experiments.toml again when it changed on disk (an editor, git, another shell):
        one ``stat`` per refresh. True when it was read again.

        A change is read once it holds still: written at least ``PLAN_SETTLE_SECONDS`` ago, or the
        same at two looks (so a clock skew on a network disk delays it by one look, never for good).
        A save in place truncates the file before it writes it, and an empty (or half-written) file
        read in between showed no experiments and dropped the user's selection.
        """
        mark = _stat(self.plan_file())
        if mark == self._plan_mark:
            return False
        just_written = time.time_ns() - mark[1] < PLAN_SETTLE_SECONDS * 1e9
        if just_written and mark != self._plan_seen:
            self._plan_seen = mark
            return False
        self.reload_plan()
        return True

    def stop_grace(self) -> float:
        """Seconds from SIGTERM to SIGKILL, as the launcher will apply them."""
        return stop_grace(self.plan.settings if self.plan is not None else None)

    def _fallback_store(self) -> None:
        """With a broken experiments.toml at start-up, still show the runs of the default runs dir."""
        if self.store is not None:
            return
        runs_dir = Path(self.plan_path or default_path()).expanduser().resolve().parent / "runs"
        if (runs_dir / DB_NAME).exists():
            self.store = RunStore(runs_dir)

    # ------------------------------------------------------------------ refresh

    def refresh(self, *, with_devices: bool = True) -> Snapshot:
        self.reload_if_changed()
        if self.store is None:  # no runs directory yet: the devices are still worth showing
            return Snapshot(
                plan_error=self.plan_error,
                devices=self._devices() if with_devices else (),
                plan_loads=self.plan_loads,
                plan_missing=self.plan_missing,
            )
        now = time.monotonic()
        if now - self._liveness_t >= LIVENESS_SECONDS:
            # vanished supervisors -> exit.json's status or `lost`: psutil per live run, so not every tick
            reconcile(self.store)
            self._liveness_t = now
        records, positions, paused = self._index()
        latest = latest_per_experiment(records)
        follow = {r.run_id: r for r in records if r.status in LIVE_STATUSES}
        follow.update({r.run_id: r for r in latest.values()})
        for rec in follow.values():
            self.monitor.follow(rec.run_id, Path(rec.run_dir))
        pinned = dict(self._pinned)
        self.monitor.forget([*follow, *pinned])
        by_id = {r.run_id: r for r in records}
        self.monitor.poll(
            finished=[
                run_id
                for run_id in [*follow, *pinned]
                if run_id in by_id and by_id[run_id].status in DONE_STATUSES
            ]
        )

        runs = tuple(
            self._run_row(rec, positions.get(rec.run_id)) for rec in self._ordered(records, positions)
        )
        best_of: dict[str, float] = {}
        for rec in records:  # a run stopped after 1 of 5 epochs is no result: completed runs only
            if rec.status != RunStatus.COMPLETED or rec.best_acc1 is None:
                continue
            if rec.best_acc1 > best_of.get(rec.experiment, float("-inf")):
                best_of[rec.experiment] = rec.best_acc1
        experiments = self._experiment_rows(latest, best_of)
        devices: tuple[Any, ...] = ()
        holders: dict[str, list[str]] = {}
        for rec in records:
            if rec.status in LIVE_STATUSES:
                for dev in rec.devices or ["cpu"]:
                    holders.setdefault(str(dev), []).append(rec.run_id)
        if with_devices:
            devices = self._devices()
        return Snapshot(
            experiments=experiments,
            runs=runs,
            devices=devices,
            holders={k: tuple(v) for k, v in holders.items()},
            plan_error=self.plan_error,
            queue_paused=paused,
            live_count=sum(1 for r in records if r.status in LIVE_STATUSES),
            plan_loads=self.plan_loads,
            plan_missing=self.plan_missing,
            slurm_outage=slurm_status.outage(records),
        )

    def _devices(self) -> tuple[Any, ...]:
        try:
            return tuple(list_devices())
        except Exception as exc:  # a broken driver must not take the dashboard down
            self.plan_error = self.plan_error or f"GPU query failed: {exc}"
            return ()

    def _index(self) -> tuple[list[Any], dict[str, tuple[int, str | None]], bool]:
        """Runs, queue positions and the pause flag; read again only when the database changed.

        Every write to the WAL-mode index touches ``mdtui.db-wal`` (or the db after a checkpoint),
        so unchanged (size, mtime) of both means nothing new: no query, no records rebuilt.
        """
        db = Path(self.store.runs_dir) / "mdtui.db"
        signature = tuple(_stat(p) for p in (db, db.with_name(db.name + "-wal")))
        if signature != self._index_signature or self._index_cache is None:
            records = self.store.list_runs(limit=self.runs_limit)
            self._index_cache = (records, self._queue_positions(), self._queue_paused())
            self._index_signature = signature
        return self._index_cache

    def invalidate(self) -> None:
        """Forget cached index reads (after an action of ours, or a reload)."""
        self._index_cache = None
        self._liveness_t = 0.0

    def run_state(self, run_id: str) -> RunState | None:
        """The live state of one run; a run the view does not follow is followed until ``unpin``."""
        state = self.monitor.state(run_id)
        if state is None and self.store is not None:
            rec = self.store.get(run_id)
            if rec is not None:
                self._pinned[run_id] = Path(rec.run_dir)
                self.monitor.follow(run_id, Path(rec.run_dir))
                self.monitor.poll()
                state = self.monitor.state(run_id)
        return state

    def unpin(self, run_id: str) -> None:
        """The run's detail closed: follow it only if the view does."""
        self._pinned.pop(run_id, None)

    def _epoch_train_loss(self, rec: Any, state: RunState | None) -> float | None:
        """The last finished epoch's train loss (not the last mini-batch's): from the live state of a
        followed run, else from the tail of its events file (read again only when the file changed)."""
        if state is not None and state.epochs:
            return state.epochs[-1].train_loss
        if state is not None or rec.status in WAITING_STATUSES:
            return None  # followed, before its first epoch ends
        run_dir = Path(rec.run_dir)
        mark = _stat(run_dir / EVENTS_FILE)
        cached = self._tail_losses.get(rec.run_id)
        if cached is None or cached[0] != mark:
            tail = read_tail_state(run_dir)
            cached = (mark, tail.epochs[-1].train_loss if tail.epochs else None)
            self._tail_losses[rec.run_id] = cached
        return cached[1]

    # ------------------------------------------------------------------ helpers

    def _queue_positions(self) -> dict[str, tuple[int, str | None]]:
        """Waiting runs: (1-based position, why it waits)."""
        try:
            entries = scheduler.queue_entries(self.store, include_launched=False)
        except Exception:  # no queue table yet, or the scheduler module is mid-upgrade
            return {}
        return {e.run_id: (e.position, e.reason) for e in entries}

    def _queue_paused(self) -> bool:
        try:
            return bool(scheduler.is_paused(self.store))
        except Exception:
            return False

    @staticmethod
    def _ordered(records: list[Any], positions: dict[str, tuple[int, str | None]]) -> list[Any]:
        """Live runs first, then the queue in its order, then the rest newest first."""

        def key(rec: Any) -> tuple[int, int, float]:
            group = 0 if rec.status in LIVE else 1 if rec.status in WAITING else 2
            return (group, positions.get(rec.run_id, (0, None))[0], -(rec.created_t or 0.0))

        return sorted(records, key=key)

    def _devices_label(self, rec: Any) -> str:
        """ "0,1", or "cpu ×2" for a run of two CPU processes (its config read once per run)."""
        if not rec.devices:
            return ""
        if rec.run_id not in self._processes:
            self._processes[rec.run_id] = ranks.configured_processes(Path(rec.run_dir))
        processes = ranks.processes_for(self._processes[rec.run_id], rec.devices)
        return ranks.devices_label(rec.devices, processes)

    @staticmethod
    def _slurm_label(rec: Any) -> str:
        """A Slurm run's job id in the device column ("#1093"): Slurm, not mdtui, placed it."""
        return f"#{rec.job_id}" if on_cluster(rec) else ""

    def _run_row(self, rec: Any, queued: tuple[int, str | None] | None) -> RunRow:
        state = self.monitor.state(rec.run_id)
        total = (state.total_epochs if state else None) or rec.total_epochs
        done = state.epochs_done if state and state.epochs else rec.epochs_done
        now = time.time()
        started = rec.started_t or (state.started_t if state else None)
        ended = rec.ended_t or (state.finished_t if state else None)
        elapsed = ((ended or now) - started) if started else None
        last = state.epochs[-1] if state and state.epochs else None
        return RunRow(
            run_id=rec.run_id,
            experiment=rec.experiment,
            status=rec.status,
            devices=self._slurm_label(rec) or self._devices_label(rec),
            epoch=(f"{done}/{total}" if total else str(done or ""))
            if done or rec.status not in WAITING_STATUSES
            else "",
            loss=self._epoch_train_loss(rec, state),
            acc1=(last.eval_acc1 if last else rec.last_acc1),
            best=(state.best_acc1 if state and state.best_acc1 is not None else rec.best_acc1),
            elapsed=elapsed,
            eta=run_eta(state, now) if state and rec.status in LIVE_STATUSES else None,
            queue_pos=queued[0] if queued else None,
            error=rec.error,
            reason=queued[1] if queued else None,
            stop_deadline=stop_deadline(Path(rec.run_dir)) if rec.status in LIVE else None,
        )

    def _experiment_rows(
        self, latest: dict[str, Any], best_of: dict[str, float]
    ) -> tuple[ExperimentRow, ...]:
        """One row per experiment: its latest run's status and curve, the best acc1 of all its runs."""
        if self.plan is None:
            return ()
        rows = []
        for exp in self.plan.experiments.values():
            rec = latest.get(exp.name)
            state = self.monitor.state(rec.run_id) if rec else None
            curve = tuple(e.eval_acc1 for e in state.epochs if e.eval_acc1 is not None) if state else ()
            knob_text = self._knobs.get(exp.name)
            if knob_text is None:
                try:
                    knob_text = format_knobs(knobs(self.plan, exp))
                except Exception:  # knobs() is a view nicety: the sweep point says enough
                    knob_text = format_knobs(exp.sweep_point)
                self._knobs[exp.name] = knob_text
            live_best = state.best_acc1 if state else None
            if rec is not None and rec.status == RunStatus.COMPLETED and live_best is not None:
                best_of[exp.name] = max(live_best, best_of.get(exp.name, live_best))
            best = best_of.get(exp.name)
            partial = (
                (live_best if live_best is not None else rec.best_acc1) if rec and best is None else None
            )
            rows.append(
                ExperimentRow(
                    name=exp.name,
                    group=exp.group,
                    model=_block_name(exp.config, "model"),
                    data=_data_label(exp.config),
                    loss=_block_name(exp.config, "loss"),
                    knobs=knob_text,
                    status=rec.status if rec else "",
                    best_acc1=best,
                    curve=curve,
                    latest_run=rec.run_id if rec else None,
                    partial_best=partial,
                )
            )
        return tuple(rows)

    # ------------------------------------------------------------------ actions (shared with the CLI's verbs)

    def experiments_named(self, names: list[str]) -> list[Any]:
        return [find_experiment(self.plan, n) for n in names]

    def start_now(
        self, names: list[str], devices: list[str] | None = None
    ) -> tuple[list[str], list[str], list[str]]:
        """Run experiments now (``mdtui.actions.start``); those whose devices (or upstream) are not
        free are queued instead, unless the backend queues runs itself. Devices are picked and
        reserved in one atomic step (the ledger lock), so a start racing the scheduler or the CLI
        never shares a device; the CPU obeys runs_per_device too.

        Returns (started run ids, queued experiment names, error messages).
        """
        if self.plan is None or self.store is None:
            return [], [], [self.plan_error or "experiments.toml is not loaded"]
        try:
            launcher = launcher_for(self.store, self.plan)
            outcome = actions.start(
                launcher, self.plan, self.experiments_named(names), devices=devices, when_busy="queue"
            )
        except (LaunchError, LookupError) as exc:
            return [], [], [str(exc)]
        return [r.run_id for r in outcome.started], outcome.deferred, outcome.errors

    def enqueue(self, names: list[str], devices: list[str] | None = None) -> list[str]:
        """Queue experiments (``mdtui.actions.enqueue``: mdtui's queue, whose scheduler starts on
        demand, or the backend's own); returns error messages."""
        if self.plan is None or self.store is None:
            return [self.plan_error or "experiments.toml is not loaded"]
        try:
            launcher = launcher_for(self.store, self.plan)
        except LaunchError as exc:
            return [str(exc)]
        return actions.enqueue(launcher, self.plan, names, devices=devices, collect=True).errors

    def stop(self, run_ids: list[str], *, kill: bool = False) -> list[str]:
        """Stop runs (``mdtui.actions.stop``): SIGTERM, SIGKILL after `stop_grace_seconds` (at once
        with ``kill``); a lost run whose engine still runs is reached too; waiting runs are cancelled."""
        errors = []
        for run_id in run_ids:
            rec = self.store.get(run_id)
            if rec is None:
                continue
            try:
                actions.stop(self.store, self.plan, rec, kill=kill)
            except LaunchRefused:
                continue  # it ended meanwhile: nothing left to stop
            except Exception as exc:
                errors.append(f"{run_id}: {exc}")
        return errors

    def why_queued(self, name: str) -> str:
        """Why ``start_now`` queued ``name`` instead of starting it, in words (the app knows which)."""
        exp = self.plan.experiments.get(name) if self.plan is not None else None
        upstream = getattr(exp, "upstream", None)
        if upstream and self.store is not None and self.store.latest_completed(upstream) is None:
            live = self.store.list_runs(experiment=upstream, statuses=LIVE | WAITING, limit=1)
            if live:
                return (
                    f"it waits for its upstream {upstream} ({live[0].status} as {live[0].run_id}) to complete"
                )
            return f"its upstream {upstream} has no completed run: the queue runs {upstream} first, then it"
        return "no free device now (runs_per_device); it starts by itself when one frees up"

    def resume(self, run_id: str) -> tuple[Any, str | None]:
        """Resume a stopped / failed / lost run from its last.pt, as `mdtui run --resume` does
        (``mdtui.actions.resume``: the same refusals). Returns (its record, None), or (None, why
        not: still live, its engine still alive, completed, no last.pt, no free device)."""
        if self.plan is None or self.store is None:
            return None, self.plan_error or "experiments.toml is not loaded"
        reconcile(self.store)  # a run that just died is lost, not still running
        rec = self.store.get(run_id)
        if rec is None:
            return None, f"run {run_id} is not in the index"
        try:
            return actions.resume(launcher_for(self.store, self.plan), rec), None
        except LaunchError as exc:
            return None, str(exc)

    def move(self, run_id: str, delta: int) -> None:
        ids = [e.run_id for e in scheduler.queue_entries(self.store)]
        if run_id in ids:
            scheduler.move(self.store, run_id, max(1, ids.index(run_id) + 1 + delta))
