"""What the TUI shows, computed without any UI: experiments, runs and devices as plain rows.

The TUI calls ``Dashboard.refresh()`` on a timer and renders the immutable ``Snapshot`` it
returns; tests call it directly. Live numbers come from the runs' event streams through
``RunMonitor`` (appended bytes only); everything else from the SQLite index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.schema.events import RunState
from mdtui.execution.reconcile import reconcile
from mdtui.views.monitor import RunMonitor

LIVE_STATUSES = ("starting", "running")
LIVENESS_SECONDS = 2.0  # how often supervisors are checked for having vanished
WAITING_STATUSES = ("queued", "blocked", "created")
DONE_STATUSES = ("completed", "failed", "stopped", "lost", "cancelled")


@dataclass(frozen=True)
class ExperimentRow:
    name: str
    group: str
    model: str
    data: str
    loss: str
    knobs: str
    status: str
    best_acc1: float | None
    curve: tuple[float, ...]  # eval acc1 per epoch of the latest run
    latest_run: str | None


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


@dataclass(frozen=True)
class Snapshot:
    experiments: tuple[ExperimentRow, ...] = ()
    runs: tuple[RunRow, ...] = ()
    devices: tuple[Any, ...] = ()  # mdtui.system.gpus.Device
    holders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # device id -> run ids
    plan_error: str | None = None
    queue_paused: bool = False
    live_count: int = 0


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


def format_knobs(knobs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items())


class Dashboard:
    """Headless model behind the TUI: plan + store + queue + devices + live event streams."""

    def __init__(self, plan_path: Path | None = None, runs_limit: int = 300) -> None:
        self.plan_path = plan_path
        self.runs_limit = runs_limit
        self.plan: Any = None
        self.plan_error: str | None = None
        self.store: Any = None
        self.monitor = RunMonitor()
        self.started = time.time()
        self._liveness_t = 0.0
        self._index_signature: tuple[Any, ...] = ()
        self._index_cache: tuple[list[Any], dict[str, tuple[int, str | None]], bool] | None = None
        self._knobs: dict[str, str] = {}
        self.reload_plan()

    # ------------------------------------------------------------------ plan

    def reload_plan(self) -> None:
        """(Re)read experiments.toml; a broken file is shown, never raised."""
        from mdtui.registry.plan import ExperimentsError, load_plan
        from mdtui.runs.store import RunStore

        try:
            plan = load_plan(self.plan_path)
        except ExperimentsError as exc:
            self.plan_error = exc.format() if hasattr(exc, "format") else str(exc)
            self._fallback_store()
            return
        except (OSError, ValueError) as exc:
            self.plan_error = str(exc)
            self._fallback_store()
            return
        self.plan = plan
        self.plan_error = None
        self._knobs = {}
        self._index_cache = None
        if self.store is None or Path(self.store.runs_dir) != Path(plan.settings.runs_dir).resolve():
            self.store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)

    def _fallback_store(self) -> None:
        """With a broken experiments.toml at start-up, still show the runs of the default runs dir."""
        from mdtui.registry.plan import default_path
        from mdtui.runs.store import DB_NAME, RunStore

        if self.store is not None:
            return
        runs_dir = Path(self.plan_path or default_path()).expanduser().resolve().parent / "runs"
        if (runs_dir / DB_NAME).exists():
            self.store = RunStore(runs_dir)

    # ------------------------------------------------------------------ refresh

    def refresh(self, *, with_devices: bool = True) -> Snapshot:
        if self.store is None:
            return Snapshot(plan_error=self.plan_error)
        now = time.monotonic()
        if now - self._liveness_t >= LIVENESS_SECONDS:
            # vanished supervisors -> exit.json's status or `lost`: psutil per live run, so not every tick
            reconcile(self.store)
            self._liveness_t = now
        records, positions, paused = self._index()
        latest: dict[str, Any] = {}
        for rec in records:  # newest first
            latest.setdefault(rec.experiment, rec)
        follow = {r.run_id: r for r in records if r.status in LIVE_STATUSES}
        follow.update({r.run_id: r for r in latest.values()})
        for rec in follow.values():
            self.monitor.follow(rec.run_id, Path(rec.run_dir))
        self.monitor.forget(follow)
        self.monitor.poll(finished=[r.run_id for r in follow.values() if r.status in DONE_STATUSES])

        runs = tuple(
            self._run_row(rec, positions.get(rec.run_id)) for rec in self._ordered(records, positions)
        )
        best_of: dict[str, float] = {}
        for rec in records:
            if rec.best_acc1 is not None and rec.best_acc1 > best_of.get(rec.experiment, float("-inf")):
                best_of[rec.experiment] = rec.best_acc1
        experiments = self._experiment_rows(latest, best_of)
        devices: tuple[Any, ...] = ()
        holders: dict[str, list[str]] = {}
        for rec in records:
            if rec.status in LIVE_STATUSES:
                for dev in rec.devices or ["cpu"]:
                    holders.setdefault(str(dev), []).append(rec.run_id)
        if with_devices:
            try:
                from mdtui.system.gpus import list_devices

                devices = tuple(list_devices())
            except Exception as exc:  # a broken driver must not take the dashboard down
                self.plan_error = self.plan_error or f"GPU query failed: {exc}"
        return Snapshot(
            experiments=experiments,
            runs=runs,
            devices=devices,
            holders={k: tuple(v) for k, v in holders.items()},
            plan_error=self.plan_error,
            queue_paused=paused,
            live_count=sum(1 for r in records if r.status in LIVE_STATUSES),
        )

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
        state = self.monitor.state(run_id)
        if state is None and self.store is not None:
            rec = self.store.get(run_id)
            if rec is not None:
                self.monitor.follow(run_id, Path(rec.run_dir))
                self.monitor.poll()
                state = self.monitor.state(run_id)
        return state

    # ------------------------------------------------------------------ helpers

    def _queue_positions(self) -> dict[str, tuple[int, str | None]]:
        """Waiting runs: (1-based position, why it waits)."""
        try:
            from mdtui.scheduling.scheduler import queue_entries

            entries = queue_entries(self.store, include_launched=False)
        except Exception:  # no queue table yet, or the scheduler module is mid-upgrade
            return {}
        return {e.run_id: (e.position, e.reason) for e in entries}

    def _queue_paused(self) -> bool:
        try:
            from mdtui.scheduling.scheduler import is_paused

            return bool(is_paused(self.store))
        except Exception:
            return False

    @staticmethod
    def _ordered(records: list[Any], positions: dict[str, tuple[int, str | None]]) -> list[Any]:
        """Live runs first, then the queue in its order, then the rest newest first."""
        rank = {"starting": 0, "running": 0, "queued": 1, "blocked": 1, "created": 1}

        def key(rec: Any) -> tuple[int, int, float]:
            group = rank.get(rec.status, 2)
            return (group, positions.get(rec.run_id, (0, None))[0], -(rec.created_t or 0.0))

        return sorted(records, key=key)

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
            devices=",".join(str(d) for d in rec.devices) if rec.devices else "",
            epoch=(f"{done}/{total}" if total else str(done or ""))
            if done or rec.status not in WAITING_STATUSES
            else "",
            loss=(state.loss if state and state.loss is not None else (last.train_loss if last else None)),
            acc1=(last.eval_acc1 if last else rec.last_acc1),
            best=(state.best_acc1 if state and state.best_acc1 is not None else rec.best_acc1),
            elapsed=elapsed,
            eta=state.eta_seconds(now) if state and rec.status in LIVE_STATUSES else None,
            queue_pos=queued[0] if queued else None,
            error=rec.error,
            reason=queued[1] if queued else None,
        )

    def _experiment_rows(
        self, latest: dict[str, Any], best_of: dict[str, float]
    ) -> tuple[ExperimentRow, ...]:
        """One row per experiment: its latest run's status and curve, the best acc1 of all its runs."""
        if self.plan is None:
            return ()
        from mdtui.registry.plan import knobs

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
            best = max((b for b in (live_best, best_of.get(exp.name)) if b is not None), default=None)
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
                )
            )
        return tuple(rows)

    # ------------------------------------------------------------------ actions (shared with the CLI's verbs)

    def experiments_named(self, names: list[str]) -> list[Any]:
        from mdtui.registry.plan import find_experiment

        return [find_experiment(self.plan, n) for n in names]

    def start_now(
        self, names: list[str], devices: list[str] | None = None
    ) -> tuple[list[str], list[str], list[str]]:
        """Run experiments now; those whose devices (or upstream) are not free are queued instead.

        Returns (started run ids, queued experiment names, error messages).
        """
        from mdtui.execution.supervise import launch
        from mdtui.runs.prepare import RunSetupError, create_run_for, dependency_order, seeds_of

        started: list[str] = []
        queued: list[str] = []
        errors: list[str] = []
        if self.plan is None or self.store is None:
            return started, queued, [self.plan_error or "experiments.toml is not loaded"]
        for exp in dependency_order(self.plan, self.experiments_named(names)):
            if exp.upstream and self.store.latest_completed(exp.upstream) is None:
                queued.append(exp.name)  # the queue waits for (and runs) its upstream first
                continue
            for seed in seeds_of(exp):
                chosen = devices or self._pick(exp)
                if chosen is None:
                    queued.append(exp.name)
                    break
                try:
                    rec = create_run_for(self.plan, self.store, exp, seed=seed, devices=chosen)
                    launch(self.store, rec.run_id, devices=chosen)
                    started.append(rec.run_id)
                except RunSetupError as exc:
                    errors.append(str(exc))
                    break
        if queued:
            errors += self.enqueue(sorted(set(queued), key=queued.index))
        return started, queued, errors

    def _pick(self, exp: Any) -> list[str] | None:
        from mdtui.system.gpus import list_devices

        if all(d.id == "cpu" for d in list_devices()):
            return ["cpu"]
        from mdtui.scheduling.scheduler import pick_devices

        return pick_devices(self.store, self.plan, getattr(exp, "gpus", 1) or 1)

    def enqueue(self, names: list[str], devices: list[str] | None = None) -> list[str]:
        """Add experiments to the queue (the scheduler starts on demand); returns error messages."""
        from mdtui.scheduling.scheduler import enqueue, ensure_scheduler

        try:
            enqueue(self.store, self.plan, names, devices=devices)
            ensure_scheduler(self.store.runs_dir, self.plan.settings.path)
        except Exception as exc:  # the message is for the user; the queue itself stays consistent
            return [str(exc)]
        return []

    def stop(self, run_ids: list[str]) -> list[str]:
        """SIGTERM the runs (SIGKILL after the grace period); queued runs are cancelled instead."""
        from mdtui.execution.supervise import stop

        errors = []
        grace = self.plan.settings.stop_grace_seconds if self.plan else 30.0
        for run_id in run_ids:
            rec = self.store.get(run_id)
            if rec is None:
                continue
            try:
                if rec.status in WAITING_STATUSES:
                    from mdtui.scheduling.scheduler import cancel

                    cancel(self.store, run_id)
                elif rec.status in LIVE_STATUSES:
                    stop(self.store, run_id, grace=grace)
            except Exception as exc:
                errors.append(f"{run_id}: {exc}")
        return errors

    def move(self, run_id: str, delta: int) -> None:
        from mdtui.scheduling.scheduler import move, queue_entries

        ids = [e.run_id for e in queue_entries(self.store)]
        if run_id in ids:
            move(self.store, run_id, max(1, ids.index(run_id) + 1 + delta))
