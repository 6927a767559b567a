"""benchmarks/gpu_check.sh on a CPU box: its run configs validate, and without CUDA it stops at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.schema.validate import from_dict

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.slow
def test_dry_run_writes_configs_that_the_engine_accepts(tmp_path: Path) -> None:
    result = _run("--dry-run", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"check": "dry_run", "configs": "valid", "out": str(tmp_path)}
    timed = from_dict(json.loads((tmp_path / "cifar10lt_200" / "config.json").read_text()))
    assert (timed.epochs, timed.batch_size, timed.model.name, timed.device) == (200, 128, "resnet32", "cuda")
    data = timed.data
    assert (data.name, data.image_size, data.samples_per_class, data.imbalance_ratio) == (
        "synthetic",
        32,
        5000,
        100,
    )
    assert data.num_classes * data.test_per_class == 10_000
    ddp = from_dict(json.loads((tmp_path / "ddp_smoke" / "config.json").read_text()))
    assert ddp.distributed.processes == 2


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_without_cuda_it_says_so_and_fails_fast(tmp_path: Path) -> None:
    result = _run("--out", str(tmp_path), timeout=60)
    assert result.returncode == 3
    assert "no CUDA device" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "pytest_gpu.log").exists()  # no stage started


def test_unknown_argument_is_a_usage_error() -> None:
    result = _run("--fast")
    assert result.returncode == 2 and "unknown argument --fast" in result.stderr
