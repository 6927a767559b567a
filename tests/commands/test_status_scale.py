"""`mdtui status` at lab scale: the index chooses the rows, so finished runs are not loaded to be dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.runs.store import RunRecord, RunStore

runner = CliRunner()


@pytest.fixture
def lab(tiny_plan) -> RunStore:
    """30 finished runs (every finished status) and 3 waiting ones, interleaved in time."""
    store = RunStore(tiny_plan.settings.runs_dir, experiments_file=tiny_plan.settings.path)
    finished = ("completed", "failed", "stopped", "lost", "cancelled")
    records = [
        RunRecord(
            run_id=f"done-{i:02d}",
            experiment="tiny",
            run_dir=store.runs_dir / "tiny" / f"done-{i:02d}",  # never created: nothing reads it
            status=finished[i % len(finished)],
            created_t=1000.0 + 10 * i,
        )
        for i in range(30)
    ]
    records += [
        RunRecord(run_id=f"wait-{i}", experiment="tiny", status=s, created_t=1005.0 + 100 * i)
        for i, s in enumerate(("created", "queued", "blocked"))
    ]
    store.put_records(records)
    return store


def _status_ids(toml: Path, *args: str) -> list[str]:
    result = runner.invoke(app, ["-f", str(toml), "status", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [r["run_id"] for r in json.loads(result.stdout)]


def test_status_shows_every_unfinished_run_then_the_latest_finished(tiny_toml: Path, lab: RunStore) -> None:
    assert _status_ids(tiny_toml, "--limit", "4") == [
        "wait-2",
        "wait-1",
        "wait-0",
        "done-29",
        "done-28",
        "done-27",
        "done-26",
    ]
    assert _status_ids(tiny_toml, "--limit", "0") == ["wait-2", "wait-1", "wait-0"]
    assert len(_status_ids(tiny_toml)) == 3 + 15  # the default limit
    everything = _status_ids(tiny_toml, "--all")
    assert len(everything) == 33 and everything[:3] == ["done-29", "done-28", "done-27"]  # newest first
    assert everything.index("wait-2") == everything.index("done-21") + 1 and everything[-1] == "done-00"
