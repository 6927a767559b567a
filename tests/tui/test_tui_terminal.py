"""The real app in a real terminal (tmux) with the real engine: launch with a key, quit, come back."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_helpers import kill_everything, write_toml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


class Terminal:
    """One tmux server of our own (its own socket: no environment leaks in from a user's server)."""

    def __init__(self, socket: str, cols: int = 100, rows: int = 30) -> None:
        self.socket, self.cols, self.rows = socket, cols, rows

    def tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return out.stdout

    def start(self, directory: Path) -> None:
        command = f"cd {shlex.quote(str(directory))} && {shlex.quote(sys.executable)} -m mdtui; sleep 60"
        self.tmux("new-session", "-d", "-s", "t", "-x", str(self.cols), "-y", str(self.rows), command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on screen within {timeout}s:\n{self.screen()}")

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    # the socket name is unique on the machine: tmp_path.name repeats across pytest-xdist workers and
    # across concurrent sessions, and close() kills the server behind it
    term = Terminal(f"mdtui-test-{os.getpid()}-{tmp_path.name}")
    yield term
    term.close()
    kill_everything(tmp_path / "runs")


def test_launch_quit_and_reattach_with_the_real_engine(
    tmp_path: Path, terminal: Terminal, monkeypatch
) -> None:
    monkeypatch.delenv("MDTUI_ENGINE_CMD", raising=False)  # the real `python -m engine`
    monkeypatch.delenv("MDTUI_FAKE_GPUS", raising=False)  # this machine's devices (the CPU here)
    toml = write_toml(tmp_path)
    toml.write_text(toml.read_text().replace("epochs = 3", "epochs = 6"))
    terminal.start(tmp_path)
    terminal.wait_for("tiny-focal", 20)  # the experiments table is up
    terminal.keys("r")
    terminal.wait_for("mdtui — 1 running", 30)  # the header counts live runs
    terminal.keys("q")
    farewell = terminal.wait_for("keeps running in the background", 10)
    assert "mdtui: 1 run keeps running" in farewell

    terminal.tmux("kill-session", "-t", "t")
    terminal.start(tmp_path)  # a new app over the same runs directory re-attaches
    terminal.wait_for("tiny-focal", 20)
    terminal.keys("2")
    screen = terminal.wait_for("completed", 45)
    row = next(line for line in screen.splitlines() if "completed" in line)
    assert "tiny" in row and "6/6" in row


def test_kill_9_of_the_tui_touches_neither_the_run_nor_the_queue(
    tmp_path: Path, terminal: Terminal, monkeypatch
) -> None:
    """The app dies hard while a run is live and another is queued: both still finish."""
    import os
    import signal

    import psutil
    from conftest import FAKE_ENGINE, wait_for

    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    monkeypatch.setenv("MDTUI_ENGINE_CMD", f"{sys.executable} {FAKE_ENGINE}")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "2")
    toml = write_toml(tmp_path)
    terminal.start(tmp_path)
    terminal.wait_for("tiny-focal", 20)
    terminal.keys("r")  # tiny runs now on the CPU
    terminal.wait_for("mdtui — 1 running", 30)
    terminal.keys("j", "a")  # tiny-focal waits in the queue for tiny (and the CPU)
    store = RunStore(load_plan(toml).settings.runs_dir)
    wait_for(lambda: len(store.list_runs()) == 2, 20)
    shell = int(terminal.tmux("list-panes", "-t", "t", "-F", "#{pane_pid}").strip())
    # Only the app itself: its supervisors and scheduler are its descendants too (in their own sessions).
    apps = [p for p in psutil.Process(shell).children(recursive=True) if p.cmdline()[-2:] == ["-m", "mdtui"]]
    assert len(apps) == 1, "the TUI process was not found"
    assert {r.experiment: r.status for r in store.list_runs()}["tiny"] in ("starting", "running")
    os.kill(apps[0].pid, signal.SIGKILL)
    wait_for(lambda: all(r.status == "completed" for r in store.list_runs()), 60)
    runs = {r.experiment: r for r in store.list_runs()}
    assert set(runs) == {"tiny", "tiny-focal"}
    assert runs["tiny-focal"].started_t >= runs["tiny"].ended_t - 1.0  # the queue kept its order
