"""Snapshots of run detail, compare, help and results at 80×24 and 120×40 over a hand-written store.

Review the SVG diff (``pytest --snapshot-report``) before running ``--snapshot-update``; each was read
for text cut mid-word and for cuts that make two different things look the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tui_helpers
from detail_helpers import DONE, FAILED, FOCAL, GPUS, make_project
from tui_helpers import settled, until

from mdtui.tui.app import MdtuiApp
from mdtui.tui.messages import CompareRequested
from mdtui.tui.screens.compare import CompareScreen
from mdtui.tui.screens.help import HelpScreen
from mdtui.tui.screens.results import ResultsScreen
from mdtui.tui.screens.run_detail import RunDetailScreen

fake_world = tui_helpers.fake_world  # a fixture, used by name
SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", GPUS)
    make_project(tmp_path)
    (tmp_path / "RESULTS.md").write_text(
        "# Results\n\n## demo\n\n- `tiny` (resnet32, synthetic) acc1 **70.00** best epoch 3, seed 0\n"
    )
    monkeypatch.chdir(tmp_path)  # titles name "experiments.toml", not a temporary path
    return Path("experiments.toml")


def detail(run_id: str, *keys: str) -> Any:
    async def run_before(pilot: Any) -> None:
        await settled(pilot)
        pilot.app.open_run(run_id)
        # mounted (its tabs take the keys, its charts are drawn): a fixed pause raced it under load
        await until(pilot, lambda: isinstance(pilot.app.screen, RunDetailScreen) and pilot.app.screen._ready)
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.4)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_detail_charts(snap_compare, project: Path, size: tuple[int, int]) -> None:
    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=detail(DONE))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_detail_failed_summary(snap_compare, project: Path, size: tuple[int, int]) -> None:
    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=detail(FAILED))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_detail_artifacts(snap_compare, project: Path, size: tuple[int, int]) -> None:
    keys = ("right_square_bracket",) * 3
    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=detail(DONE, *keys))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_detail_log(snap_compare, project: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        run_dir = Path(pilot.app.dashboard.store.get(FAILED).run_dir)
        (run_dir / "stderr.log").write_text(
            "Traceback (most recent call last):\n"
            '  File "/home/user/project/engine/train.py", line 212, in train_one_epoch\n'
            "    raise FloatingPointError(f'non-finite loss at epoch {epoch + 1}: {loss.item()!r}')\n"
            "FloatingPointError: non-finite loss at epoch 2: nan\n"
        )
        await detail(FAILED, "t")(pilot)

    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=run_before)


async def compare_drawn(pilot: Any) -> None:
    """The compare screen laid out: its table and charts are drawn together on its first Resize
    (a fixed pause raced it under load and caught the charts still saying "no data yet")."""
    screen = await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen) and pilot.app.screen)
    await until(pilot, lambda: screen.table is not None)  # type: ignore[union-attr]
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_compare(snap_compare, project: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settled(pilot)
        pilot.app.post_message(CompareRequested([DONE, FOCAL, FAILED]))
        await compare_drawn(pilot)

    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_help(snap_compare, project: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settled(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        await pilot.pause(0.3)

    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_results(snap_compare, project: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settled(pilot)
        await pilot.press("R")
        screen = await until(pilot, lambda: isinstance(pilot.app.screen, ResultsScreen) and pilot.app.screen)
        await until(pilot, lambda: screen.loaded)  # type: ignore[union-attr]
        await pilot.pause(0.4)

    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=run_before)


@pytest.fixture
def live_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Plus a run in its first epoch and a resumed one, shown at a fixed clock."""
    import time
    import types

    from detail_helpers import NOW, write_live_runs

    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore
    from mdtui.tui.screens import run_detail

    monkeypatch.setattr(run_detail, "time", types.SimpleNamespace(time=lambda: NOW, monotonic=time.monotonic))
    write_live_runs(RunStore(Path("runs")), load_plan(project))
    return project


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_detail_during_an_epoch(snap_compare, live_project: Path, size: tuple[int, int]) -> None:
    from detail_helpers import LIVE

    assert snap_compare(MdtuiApp(live_project), terminal_size=size, run_before=detail(LIVE))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_detail_resumed_run(snap_compare, live_project: Path, size: tuple[int, int]) -> None:
    from detail_helpers import RESUMED

    assert snap_compare(MdtuiApp(live_project), terminal_size=size, run_before=detail(RESUMED))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_detail_plain_run_files(snap_compare, project: Path, size: tuple[int, int]) -> None:
    from detail_helpers import write_plain_files

    from mdtui.runs.store import RunStore

    write_plain_files(Path(RunStore(Path("runs")).get(DONE).run_dir))
    keys = ("right_square_bracket",) * 3
    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=detail(DONE, *keys))


LONG_NAMES = """
[experiment.cifar10-lt100-resnet32-refl-mislas-calibrated-baseline]
group = "demo"
from = "tiny"

[experiment.cifar10-lt100-resnet32-refl-mislas-calibrated-label-aware]
group = "demo"
from = "tiny"
loss = "ldam"
"""


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_compare_long_names(snap_compare, project: Path, size: tuple[int, int]) -> None:
    """Two experiments whose names differ only at their end, and a third run: every legend entry
    whole, and the header names each run by what tells it apart."""
    from detail_helpers import write_run

    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    project.write_text(project.read_text() + LONG_NAMES)
    plan = load_plan(project)
    store = RunStore(plan.settings.runs_dir, experiments_file=project)
    ids = ["20250101-180000-gggg", "20250101-190000-hhhh"]
    for run_id, name, accs in zip(
        ids, list(plan.experiments)[-2:], ([50.0, 60.0], [52.0, 58.5]), strict=True
    ):
        write_run(store, plan, name, run_id, accs=accs, status="completed", total=2, offset=20_000)

    async def run_before(pilot: Any) -> None:
        await settled(pilot)
        pilot.app.post_message(CompareRequested([*ids, DONE]))
        await compare_drawn(pilot)

    assert snap_compare(MdtuiApp(project), terminal_size=size, run_before=run_before)
