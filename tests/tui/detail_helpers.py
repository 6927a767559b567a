"""A hand-written run store for the run-detail, compare, help and results tests: fixed ids and times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tui_helpers import write_toml

from engine.schema.events import encode, make_event
from mdtui.registry.plan import engine_config, load_plan
from mdtui.runs.store import RunStore

GPUS = json.dumps(
    [
        {"name": "NVIDIA A100 80GB", "memory_total_mb": 81920, "memory_used_mb": 1024, "utilization": 3},
        {"name": "NVIDIA A100 80GB", "memory_total_mb": 81920, "memory_used_mb": 2048, "utilization": 5},
    ]
)
T0 = 1_760_000_000.0  # fixed times: nothing on screen depends on the clock
DONE = "20250101-120000-aaaa"
FOCAL = "20250101-130000-bbbb"
FAILED = "20250101-140000-cccc"
CRASHED = "20250101-150000-dddd"  # failed before its first event: no epochs, no total
DOCTOR = {f"knob_{i:02d}": i / 10 for i in range(20)} | {"preset": "refl"}


def epoch_events(run_id: str, accs: list[float], t: float) -> list[dict[str, Any]]:
    lines = []
    for ep, acc in enumerate(accs):
        for step in range(4):
            lines.append(
                make_event(
                    "step",
                    run_id,
                    t=t + ep * 60 + step,
                    epoch=ep,
                    step=step,
                    loss=2.0 / (ep + 1 + step / 4),
                    lr=0.1,
                )
            )
        lines.append(
            make_event(
                "epoch",
                run_id,
                t=t + ep * 60 + 50,
                epoch=ep,
                lr=0.1 * 0.9**ep,
                seconds=60.0,
                train={"loss": 2.0 / (ep + 1), "acc1": acc + 4},
                eval={"loss": 2.2 / (ep + 1), "acc1": acc, "acc5": 99.0},
                best_acc1=max(accs[: ep + 1]),
                best_epoch=accs.index(max(accs[: ep + 1])),
            )
        )
    return lines


def write_run(
    store: RunStore,
    plan: Any,
    name: str,
    run_id: str,
    *,
    accs: list[float],
    status: str,
    total: int | None,
    error: str | None = None,
    offset: float = 0.0,
    artifacts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    config_extra: dict[str, Any] | None = None,
) -> Path:
    exp = plan.experiments[name]
    config = engine_config(plan, exp, run_id=run_id, seed=0)
    rec = store.create_run(exp, config, seed=0, devices=["0"], status=status, run_id=run_id)
    run_dir = Path(rec.run_dir)
    if config_extra:
        saved = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps(saved | config_extra))
    t = T0 + offset
    lines = []
    if total is not None:
        lines.append(
            make_event("run_started", run_id, t=t, total_epochs=total, steps_per_epoch=4, device="cuda:0")
        )
    lines.extend(epoch_events(run_id, accs, t))
    for ep in range(len(accs)):
        lines.append(
            make_event(
                "checkpoint",
                run_id,
                t=t + ep * 60 + 51,
                epoch=ep,
                path=str(run_dir / "checkpoints" / "last.pt"),
                is_best=False,
            )
        )
    for item in artifacts:  # paths relative to the run directory, written absolute as the engine does
        lines.append(
            make_event("artifact", run_id, t=t + 1, **(item | {"path": str(run_dir / item["path"])}))
        )
    if status in ("completed", "failed", "stopped"):
        summary = {"epochs_done": len(accs), "seconds": 60.0 * len(accs)}
        if accs:
            summary |= {"best_acc1": max(accs), "best_epoch": accs.index(max(accs))}
        lines.append(
            make_event(
                "run_finished", run_id, t=t + 60 * len(accs), status=status, summary=summary, error=error
            )
        )
    (run_dir / "events.jsonl").write_text("".join(encode(e) + "\n" for e in lines))
    (run_dir / "stdout.log").write_text("loading synthetic data\n")
    store.update(
        run_id,
        created_t=t,
        started_t=t,
        ended_t=t + 60 * len(accs) if status != "running" else None,
        total_epochs=total,
        epochs_done=len(accs),
        best_acc1=max(accs) if accs else None,
        last_acc1=accs[-1] if accs else None,
        error=error,
    )
    return run_dir


def make_project(tmp_path: Path) -> tuple[Path, RunStore]:
    """Four runs: two completed (one with a doctor block), one failed at epoch 2, one failed at start."""
    toml = write_toml(tmp_path)
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    write_run(
        store,
        plan,
        "tiny",
        DONE,
        accs=[52.5, 61.25, 70.0],
        status="completed",
        total=3,
        artifacts=[
            {
                "kind": "confusion",
                "path": "plots/per-class/confusion_matrix_best_epoch.png",
                "summary": {"classes": 3, "worst": "class 2", "acc": [0.7, 0.8, 0.6]},
            },
            {"kind": "mask", "path": "doctor/channel_mask_layer3.npz"},
        ],
    )
    write_run(
        store,
        plan,
        "tiny-focal",
        FOCAL,
        accs=[55.0, 66.5],
        status="completed",
        total=2,
        offset=3600,
        config_extra={"doctor": DOCTOR},
    )
    write_run(
        store,
        plan,
        "tiny",
        FAILED,
        accs=[48.0],
        status="failed",
        total=3,
        error="non-finite loss at epoch 2",
        offset=7200,
    )
    write_run(
        store,
        plan,
        "tiny",
        CRASHED,
        accs=[],
        status="failed",
        total=None,
        error="ModuleNotFoundError: No module named 'torchvision'",
        offset=9000,
    )
    return toml, store


LIVE = "20250101-160000-eeee"  # in its first epoch: step 15 of 97
RESUMED = "20250101-170000-ffff"  # lost after 2 of 4 epochs, resumed, in epoch 3
NOW = T0 + 20_000.0  # the clock the live runs are shown at (patched into the run detail)


def keep_alive(store: RunStore, run_id: str) -> None:
    """Record this test process as the run's supervisor: reconcile leaves a live run live."""
    import os

    from mdtui.system.processes import process_start_time

    store.update(run_id, supervisor_pid=os.getpid(), supervisor_start=process_start_time(os.getpid()))


def step_events(run_id: str, epoch: int, steps: int, t: float, loss: float = 1.36) -> list[dict[str, Any]]:
    """``steps`` mini-batches of ``epoch``, one per second from ``t``, the last with ``loss``."""
    return [
        make_event("step", run_id, t=t + s + 1, epoch=epoch, step=s, loss=loss + (steps - 1 - s) / 10, lr=0.1)
        for s in range(steps)
    ]


def write_live_runs(store: RunStore, plan: Any) -> None:
    """LIVE: 15 steps into its first epoch; RESUMED: two sessions, the second 10 steps into epoch 3."""
    for run_id, name in ((LIVE, "tiny"), (RESUMED, "tiny-focal")):
        exp = plan.experiments[name]
        rec = store.create_run(
            exp,
            engine_config(plan, exp, run_id=run_id, seed=0),
            seed=0,
            devices=["1"],
            status="running",
            run_id=run_id,
        )
        run_dir = Path(rec.run_dir)
        start = NOW - 15 if run_id == LIVE else NOW - 10
        if run_id == LIVE:
            lines = [
                make_event(
                    "run_started", run_id, t=start, total_epochs=4, steps_per_epoch=97, device="cuda:1"
                )
            ]
            lines += step_events(run_id, 0, 15, start)
        else:
            first = NOW - 1000
            lines = [
                make_event("run_started", run_id, t=first, total_epochs=4, steps_per_epoch=4, device="cuda:1")
            ]
            lines += epoch_events(run_id, [40.0, 50.0], first)
            lines.append(
                make_event(
                    "run_started", run_id, t=start, total_epochs=4, steps_per_epoch=20, device="cuda:1"
                )
            )
            lines += step_events(run_id, 2, 10, start, loss=0.8)
        (run_dir / "events.jsonl").write_text("".join(encode(e) + "\n" for e in lines))
        (run_dir / "stdout.log").write_text("loading synthetic data\n")
        store.update(
            run_id, created_t=start, started_t=start, total_epochs=4, epochs_done=0 if run_id == LIVE else 2
        )
        keep_alive(store, run_id)


def write_plain_files(run_dir: Path) -> None:
    """What every plain run leaves: plots and a confusion matrix in artifacts/, best.pt and last.pt."""
    (run_dir / "artifacts").mkdir(exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    for name, size in (("curves.png", 2300), ("per_class.png", 4100), ("confusion_matrix.json", 180)):
        (run_dir / "artifacts" / name).write_bytes(b"x" * size)
    for name in ("best.pt", "last.pt"):
        (run_dir / "checkpoints" / name).write_bytes(b"x" * 3_500_000)
