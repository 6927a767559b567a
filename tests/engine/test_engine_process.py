"""The real ``python -m engine RUN_DIR`` process: events on stdout, SIGTERM, resume, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.schema.config import to_dict
from engine.schema.events import read_events
from tests.engine.engine_helpers import tiny_config
from tests.engine.gpu_helpers import DEVICES, on

REPO = Path(__file__).resolve().parents[2]


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "engine", str(run_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [e for e in read_events(path) if isinstance(e, dict)] if path.exists() else []


def wait_for(run_dir: Path, type_: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["type"] == type_ for e in events(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {type_} event within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_sigterm_stops_cleanly_and_resume_completes(tmp_path, device):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = to_dict(tiny_config(epochs=25, run_id="proc-1", **on(device)))
    (run_dir / "config.json").write_text(json.dumps(cfg))
    proc = start(run_dir)
    wait_for(run_dir, "step")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["v"] == 1 for line in lines)  # stdout carries events only
    evs = events(run_dir)
    assert evs[-1]["type"] == "run_finished" and evs[-1]["status"] == "stopped"
    assert evs[-1]["run_id"] == "proc-1"
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert last["epoch"] * 3 + last["step_in_epoch"] >= 1

    proc = start(run_dir, "--resume")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    evs = events(run_dir)
    assert evs[-1]["status"] == "completed" and evs[-1]["summary"]["epochs_done"] == 25
    epochs = [e["epoch"] for e in evs if e["type"] == "epoch"]
    assert epochs == list(range(25))  # nothing repeated, nothing missing


@pytest.mark.slow
def test_invalid_config_exits_2_with_a_clear_message(tmp_path):
    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"epochs": 2, "optim": {"name": "sgd", "lrr": 0.1}}))
    proc = start(run_dir)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "optim.lrr" in err and 'did you mean "lr"' in err and "Traceback" not in err
    assert events(run_dir)[-1]["status"] == "failed"
