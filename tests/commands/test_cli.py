"""The CLI through typer.testing.CliRunner (mdtui/cli.py, mdtui/commands/run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdtui.cli import app, format_log_line

runner = CliRunner()


def invoke(toml: Path, *args: str):
    return runner.invoke(app, ["-f", str(toml), *args], catch_exceptions=False)


def test_validate_ok(tiny_toml: Path) -> None:
    result = runner.invoke(app, ["validate", str(tiny_toml)])
    assert result.exit_code == 0, result.output
    assert "2 experiments in 1 groups" in result.output


def test_validate_errors_exit_2_with_location_and_no_traceback(tiny_toml: Path) -> None:
    tiny_toml.write_text(tiny_toml.read_text().replace('loss = "ce"', 'loss = "cee"\nepochz = 3'))
    result = runner.invoke(app, ["-f", str(tiny_toml), "validate"])
    assert result.exit_code == 2
    assert "experiments.toml" in result.output and "epochz" in result.output and "cee" in result.output
    assert (
        "Traceback" not in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )


def test_missing_file_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["-f", str(tmp_path / "nope.toml"), "list"])
    assert result.exit_code == 2
    assert "nope.toml" in result.output


def test_list_json(tiny_toml: Path) -> None:
    result = invoke(tiny_toml, "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["tiny", "tiny-focal"]
    assert rows[1]["from"] == "tiny" and rows[1]["loss"] == "fl" and rows[0]["latest_run"] is None
    table = invoke(tiny_toml, "list")
    assert table.exit_code == 0 and "tiny-focal" in table.output


def test_unknown_experiment_lists_closest(tiny_toml: Path) -> None:
    result = invoke(tiny_toml, "run", "tinyy")
    assert result.exit_code == 2
    assert "tiny" in result.output and "closest" in result.output


def test_unknown_run_lists_closest(tiny_toml: Path) -> None:
    result = invoke(tiny_toml, "logs", "nothing-here")
    assert result.exit_code == 2
    assert "no run or experiment" in result.output


def test_bad_device_is_a_usage_error(tiny_toml: Path) -> None:
    result = invoke(tiny_toml, "run", "tiny", "--device", "gpu0")
    assert result.exit_code == 2 and "--device" in result.output


def test_device_that_does_not_exist_is_a_usage_error(tiny_toml: Path, monkeypatch) -> None:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", "2")
    result = invoke(tiny_toml, "run", "tiny", "--device", "5")
    assert result.exit_code == 2 and "no GPU 5" in result.output and "0, 1" in result.output


def test_from_without_upstream_run_fails_clearly(tiny_toml: Path, fake_engine: str) -> None:
    result = invoke(tiny_toml, "run", "tiny-focal")
    assert result.exit_code == 1
    assert 'starts from "tiny", which has no completed run' in result.output


def test_bare_mdtui_without_tui_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake_import(name: str, *a, **k):
        if name == "mdtui.tui.app":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    result = runner.invoke(app, [])
    assert result.exit_code == 0 and "TUI is not installed yet" in result.output


def test_bare_mdtui_opens_the_tui_with_the_chosen_file(
    monkeypatch: pytest.MonkeyPatch, tiny_toml: Path
) -> None:
    import sys
    import types

    opened: list[object] = []
    fake = types.ModuleType("mdtui.tui.app")
    fake.run_app = opened.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mdtui.tui.app", fake)
    result = runner.invoke(app, ["-f", str(tiny_toml)])
    assert result.exit_code == 0 and opened == [tiny_toml]


def test_a_kernel_run_on_two_gpus_by_hand_is_refused_before_it_exists(
    tiny_toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation covers gpus / nodes; `--device 0,1` or `queue add --gpus 2` by hand would give it two
    processes, which the engine would refuse only at start."""
    monkeypatch.setenv("MDTUI_FAKE_GPUS", "0,1")
    kernels = '\n[experiment.kt]\ngroup = "demo"\nkernels = { layers = ["20..29"] }\n'
    tiny_toml.write_text(tiny_toml.read_text() + kernels)
    runs = tiny_toml.parent / "runs"
    for args in (["run", "kt", "--device", "0,1", "--detach"], ["queue", "add", "kt", "--gpus", "2"]):
        result = invoke(tiny_toml, *args)
        said = " ".join(result.output.split())
        assert result.exit_code != 0 and "runs in one process; it would get 2: give it one device" in said, (
            said
        )
        assert not [p for p in runs.glob("*/*") if p.is_dir()] if runs.exists() else True


@pytest.mark.slow
def test_run_status_logs_stop_and_chain(tiny_toml: Path, fake_engine: str) -> None:
    result = invoke(tiny_toml, "run", "tiny", "tiny-focal", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "epoch 3/3" in result.output and "completed tiny run" in result.output
    assert "completed tiny-focal run" in result.output  # ran after its upstream, from its best.pt

    status = invoke(tiny_toml, "status", "--json")
    runs = {r["experiment"]: r for r in json.loads(status.stdout)}
    assert runs["tiny"]["status"] == "completed" and runs["tiny"]["best_acc1"] == 70.0
    config = json.loads((Path(runs["tiny-focal"]["run_dir"]) / "config.json").read_text())
    assert config["init_checkpoint"] == str(Path(runs["tiny"]["run_dir"]) / "checkpoints" / "best.pt")
    assert "completed" in invoke(tiny_toml, "status").output

    logs = invoke(tiny_toml, "logs", "tiny")
    assert logs.exit_code == 0 and "epoch 3  loss" in logs.output and "run finished: completed" in logs.output
    assert '"type"' in invoke(tiny_toml, "logs", runs["tiny"]["run_id"], "--raw").output
    assert "[mdtui.execution.supervise]" in invoke(tiny_toml, "logs", "tiny", "--stderr").output

    stop = invoke(tiny_toml, "stop", runs["tiny"]["run_id"])
    assert stop.exit_code == 1 and "not running (status: completed)" in stop.output

    listed = {r["name"]: r for r in json.loads(invoke(tiny_toml, "list", "--json").stdout)}
    assert listed["tiny"]["latest_run"]["status"] == "completed"

    assert "indexed 2 runs" in invoke(tiny_toml, "reindex").output


@pytest.mark.slow
def test_run_json_exit_code_reflects_failure(tiny_toml: Path, fake_engine: str, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_FAIL_AT", "0")
    result = invoke(tiny_toml, "run", "tiny", "--json")
    assert result.exit_code == 1
    (rec,) = json.loads(result.stdout)
    assert rec["status"] == "failed" and rec["error"] == "fake failure at epoch 0"


@pytest.mark.slow
def test_detach_then_stop(tiny_toml: Path, fake_engine: str, monkeypatch, reap) -> None:
    from conftest import wait_for

    from mdtui.runs.store import RunStore

    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "4")
    result = invoke(tiny_toml, "run", "tiny", "--detach", "--json")
    assert result.exit_code == 0, result.output
    (launched,) = json.loads(result.stdout)
    store = RunStore(tiny_toml.parent / "runs")
    rec = wait_for(lambda: (r := store.get(launched["run_id"])).status == "running" and r.pid and r)
    reap.append(rec.pgid)
    events = Path(rec.run_dir) / "events.jsonl"
    wait_for(lambda: events.exists() and '"type":"step"' in events.read_text())
    stop = invoke(tiny_toml, "stop", launched["run_id"][-4:], "--wait")
    assert stop.exit_code == 0, stop.output
    assert "stopped" in stop.output
    assert store.get(rec.run_id).status == "stopped"

    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.05")
    resumed = invoke(tiny_toml, "run", "--resume", rec.run_id, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)[0]["status"] == "completed"
    assert "--resume" in json.loads((Path(rec.run_dir) / "run.json").read_text())["command"]
    assert (Path(rec.run_dir) / "exit.json.prev").exists()
    again = invoke(tiny_toml, "run", "--resume", rec.run_id)
    assert again.exit_code == 2 and "already completed" in again.output


@pytest.mark.slow
def test_demo_runs_the_demo_group_and_prints_a_summary(tiny_toml: Path, fake_engine: str) -> None:
    result = invoke(tiny_toml, "demo")
    assert result.exit_code == 0, result.output
    assert "demo summary" in result.output
    assert result.output.count("completed") >= 2


def test_format_log_line() -> None:
    assert format_log_line("plain text\n") == "plain text"
    assert format_log_line('{"v":1,"type":"step","run_id":"r","t":1,"epoch":0,"step":1,"loss":1}') is None
    line = '{"v":1,"type":"epoch","run_id":"r","t":1,"epoch":1,"train":{"loss":0.5},"eval":{"acc1":61.25}}'
    assert format_log_line(line) == "epoch 2  loss 0.5000  acc1 61.25%"
    assert format_log_line("   ") is None


@pytest.mark.slow
def test_logs_follow_returns_when_the_run_ends(tiny_toml: Path, fake_engine: str, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.5")
    launched = json.loads(invoke(tiny_toml, "run", "tiny", "--detach", "--json").stdout)
    result = invoke(tiny_toml, "logs", launched[0]["run_id"], "--follow")
    assert result.exit_code == 0
    assert "epoch 3  loss" in result.output and "run finished: completed" in result.output
