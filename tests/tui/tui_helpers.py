"""TUI test helpers: the app over the tiny experiments.toml, fake GPUs, the fake engine, clean-up."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TOML

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def fake_world(monkeypatch: pytest.MonkeyPatch, fake_engine: str) -> None:
    """Two idle fake GPUs and the fake engine for every TUI test (tests override as they need)."""
    monkeypatch.setenv("MDTUI_FAKE_GPUS", "2")
    monkeypatch.setenv("MDTUI_SCHEDULER_POLL", "0.1")


def write_toml(directory: Path, extra_settings: str = "", body: str = TINY_TOML) -> Path:
    path = directory / "experiments.toml"
    text = body.replace("[settings]\n", "[settings]\n" + extra_settings, 1) if extra_settings else body
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """experiments.toml of the tiny project; every run and scheduler left alive is killed afterwards."""
    path = write_toml(tmp_path)
    yield path
    kill_everything(tmp_path / "runs")


def kill_everything(runs_dir: Path) -> None:
    """SIGKILL every supervisor, engine group and scheduler a test left behind."""
    from mdtui.runs.store import DB_NAME, RunStore
    from mdtui.scheduling import scheduler

    for proc in scheduler._STARTED:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(5)
    scheduler._STARTED.clear()
    if not (runs_dir / DB_NAME).exists():
        return
    for rec in RunStore(runs_dir).list_runs():
        for pid in (rec.supervisor_pid, rec.pgid):
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


async def until(
    pilot: Any, predicate: Callable[[], object], timeout: float = 15.0, state: Callable[[], object] = str
) -> object:
    """Let the app run until ``predicate`` holds (fails the test after ``timeout`` seconds, saying
    what ``state`` returns then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"condition not met within {timeout}s {state()}")


async def settled(pilot: Any, pause: float = 0.2) -> None:
    """Wait for the first refresh (index, events and devices) to reach the main screen, laid out.

    Laid out means the GPU panel is as tall as its rows: a screen pushed on top (help, a dialog)
    keeps the main screen's layout as it was, so a snapshot over a layout still pending (seen under
    load) showed the panel cut to its first device.
    """
    from mdtui.tui.widgets.gpu_panel import GpuPanel

    app = pilot.app
    await until(pilot, lambda: app.snapshot.devices and app.snapshot.runs)
    panel = app.screen.query_one(GpuPanel)
    await until(
        pilot,
        lambda: panel.rows and panel.size.height == 1 + len(panel.rows),  # header + rows
        state=lambda: f"(screen {app.screen!r}, panel {panel.size}, rows {panel.rows})",
    )
    await pilot.pause(pause)


def runs_of(app: Any) -> dict[str, Any]:
    """The run rows the app shows, by run id."""
    return {row.run_id: row for row in app.snapshot.runs}
