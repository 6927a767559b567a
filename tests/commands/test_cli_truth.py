"""CLI lines that must tell the truth the TUI tells (issue 20): a paused queue is said."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.scheduling import scheduler


def test_status_says_the_queue_is_paused(tiny_toml: Path, tiny_plan: Any, store: Any) -> None:
    scheduler.enqueue(store, tiny_plan, ["tiny"])
    scheduler.pause(store)
    out = CliRunner().invoke(app, ["-f", str(tiny_toml), "status"], catch_exceptions=False).output
    assert "the queue is paused: 1 queued run wait" in " ".join(out.split())
    scheduler.resume(store)
    out = CliRunner().invoke(app, ["-f", str(tiny_toml), "status"], catch_exceptions=False).output
    assert "paused" not in out
