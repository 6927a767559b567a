"""Snapshots of the main screen and the stop dialog at 80x24 and 120x40, over a hand-written store:
fixed run ids and times, fake GPUs. (Run detail, compare and help: test_tui_detail_snapshots.py.)

Review the SVG diff (``pytest --snapshot-report``) before running ``--snapshot-update``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tui_helpers
from detail_helpers import epoch_events
from tui_helpers import until, write_toml

from engine.schema.events import encode, make_event
from mdtui.registry.plan import engine_config, load_plan
from mdtui.runs.store import RunStore
from mdtui.tui.app import MdtuiApp
from mdtui.tui.screens.confirm import ConfirmDialog
from mdtui.tui.widgets.run_table import RunTable

GPUS = json.dumps(
    [
        {"name": "NVIDIA A100 80GB", "memory_total_mb": 81920, "memory_used_mb": 1024, "utilization": 3},
        {
            "name": "NVIDIA A100 80GB",
            "memory_total_mb": 81920,
            "memory_used_mb": 61440,
            "utilization": 97,
            "processes": [{"pid": 4242, "owner": "alice", "memory_mb": 61440, "name": "python"}],
        },
    ]
)
T0 = 1_760_000_000.0  # fixed times: nothing on screen depends on the clock

fake_world = tui_helpers.fake_world  # a fixture, used by name


def write_run(
    store: RunStore,
    plan: Any,
    name: str,
    run_id: str,
    *,
    accs: list[float],
    status: str,
    total: int,
    error: str | None = None,
    offset: float = 0.0,
) -> None:
    exp = plan.experiments[name]
    config = engine_config(plan, exp, run_id=run_id, seed=0)
    rec = store.create_run(exp, config, seed=0, devices=["0"], status=status, run_id=run_id)
    t = T0 + offset
    lines = [make_event("run_started", run_id, t=t, total_epochs=total, steps_per_epoch=4, device="cuda:0")]
    lines += epoch_events(run_id, accs, t)
    if status in ("completed", "failed", "stopped"):
        summary = {
            "best_acc1": max(accs),
            "best_epoch": accs.index(max(accs)),
            "epochs_done": len(accs),
            "seconds": 60.0 * len(accs),
        }
        lines.append(
            make_event(
                "run_finished", run_id, t=t + 60 * len(accs), status=status, summary=summary, error=error
            )
        )
    (Path(rec.run_dir) / "events.jsonl").write_text("".join(encode(e) + "\n" for e in lines))
    (Path(rec.run_dir) / "stdout.log").write_text("loading synthetic data\n")
    store.update(
        run_id,
        created_t=t,
        started_t=t,
        ended_t=t + 60 * len(accs),
        total_epochs=total,
        epochs_done=len(accs),
        best_acc1=max(accs),
        last_acc1=accs[-1],
        error=error,
    )


@pytest.fixture
def snapshot_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", GPUS)
    toml = write_toml(tmp_path)
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    write_run(
        store, plan, "tiny", "20250101-120000-aaaa", accs=[52.5, 61.25, 70.0], status="completed", total=3
    )
    write_run(
        store,
        plan,
        "tiny-focal",
        "20250101-130000-bbbb",
        accs=[55.0, 66.5],
        status="completed",
        total=2,
        offset=3600,
    )
    write_run(
        store,
        plan,
        "tiny",
        "20250101-140000-cccc",
        accs=[48.0],
        status="failed",
        total=3,
        error="non-finite loss at epoch 2",
        offset=7200,
    )
    monkeypatch.chdir(tmp_path)  # messages name "experiments.toml", not a temporary path
    return Path("experiments.toml")


async def settled(pilot: Any) -> None:
    await tui_helpers.settled(pilot, pause=0.3)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_experiments(snap_compare, snapshot_project: Path, size: tuple[int, int]) -> None:
    assert snap_compare(MdtuiApp(snapshot_project), terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_runs(snap_compare, snapshot_project: Path, size: tuple[int, int]) -> None:
    async def runs_tab(pilot: Any) -> None:
        await settled(pilot)
        await pilot.press("2")
        await pilot.pause(0.2)

    assert snap_compare(MdtuiApp(snapshot_project), terminal_size=size, run_before=runs_tab)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_stop_dialog(snap_compare, snapshot_project: Path, size: tuple[int, int]) -> None:
    """A queued run under the cursor, K: the dialog lists it, wraps its question, focuses Cancel."""
    plan = load_plan(snapshot_project)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    exp = plan.experiments["tiny-focal"]
    config = engine_config(plan, exp, run_id="20250101-150000-dddd", seed=0)
    store.create_run(exp, config, seed=0, devices=[], status="queued", run_id="20250101-150000-dddd")
    store.update("20250101-150000-dddd", created_t=T0 + 10_800)

    async def stop_dialog(pilot: Any) -> None:
        await settled(pilot)
        await pilot.press("2")
        table = pilot.app.screen.query_one(RunTable)
        await until(pilot, lambda: table.current_key() == "20250101-150000-dddd")
        await pilot.press("K")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmDialog))
        await pilot.pause(0.3)

    assert snap_compare(MdtuiApp(snapshot_project), terminal_size=size, run_before=stop_dialog)


def test_snapshot_broken_toml(snap_compare, snapshot_project: Path) -> None:
    text = snapshot_project.read_text().replace('loss = "ce"', 'loss = "cee"\nlearning_rate = 0.1')
    snapshot_project.write_text(text)

    async def broken(pilot: Any) -> None:
        await until(pilot, lambda: pilot.app.snapshot.devices)
        await pilot.pause(0.3)

    assert snap_compare(MdtuiApp(snapshot_project), terminal_size=(80, 24), run_before=broken)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_empty_folder(
    snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    """A first start where there is nothing: what the file is, how to begin; the GPUs all the same."""
    monkeypatch.setenv("MDTUI_FAKE_GPUS", GPUS)
    monkeypatch.chdir(tmp_path)

    async def run_before(pilot: Any) -> None:
        await until(pilot, lambda: pilot.app.snapshot.devices)
        await pilot.pause(0.3)

    assert snap_compare(MdtuiApp(Path("experiments.toml")), terminal_size=size, run_before=run_before)
