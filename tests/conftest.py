"""Shared fixtures: an isolated environment and a tiny experiments.toml that trains in seconds."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_ENGINE = REPO / "tests" / "fixtures" / "fake_engine.py"

# A synthetic dataset small enough that the real engine finishes an epoch in well under a second.
TINY_TOML = """\
[settings]
runs_dir = "runs"
results_log = "RESULTS.md"
stop_grace_seconds = 10

[defaults]
epochs = 3
batch_size = 16
eval_batch_size = 64
model = "resnet32"
data = { name = "synthetic", num_classes = 3, samples_per_class = 8, test_per_class = 4, image_size = 8, num_workers = 0 }
optim = { name = "sgd", lr = 0.05 }
schedule = { name = "cosine" }

[experiment.tiny]
group = "demo"
baseline = true
description = "a tiny CE baseline"
loss = "ce"

[experiment.tiny-focal]
group = "demo"
from = "tiny"
epochs = 2
loss = { name = "fl", gamma = 2.0 }
"""


def pytest_configure(config: pytest.Config) -> None:
    """A Rich console keeps the COLUMNS/LINES it was built under for good; without them it reads the
    environment on every use. mdtui's module-level consoles (mdtui.commands.common) are built here,
    before any test sets COLUMNS, so they follow each test's COLUMNS whichever test imports mdtui
    first (under pytest-xdist every worker runs its own order of tests)."""
    saved = {name: os.environ.pop(name) for name in ("COLUMNS", "LINES") if name in os.environ}
    import mdtui.commands.common  # noqa: F401

    os.environ.update(saved)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for `-n auto` (pyproject addopts): one per core the process may use, plus one for
    the `slurm` group, whose tests mostly wait on the cluster (3 on a 2-core box); at most 8 in all,
    as each worker holds its own torch and test processes."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores, 7) + 1


# The fixtures of tests/slurm/conftest.py that reach the one real Slurm cluster of this machine
# (other folders import them too).
SLURM_FIXTURES = {"slurm_cluster", "slurm"}


# tryfirst: pytest-xdist's worker reads the xdist_group markers in a hook of its own (registered after
# this file), which must see the markers added here.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """How `python -m pytest` spreads the tests over pytest-xdist workers (`-n`, `--dist loadgroup`
    in pyproject.toml): a group runs on one worker, in order.

    - `slurm`: every test of the real cluster. They set nodes DOWN, count jobs and free GPUs, kill
      the controller: concurrent tests on the same cluster would see each other. The group goes
      first, as one worker's long queue of mostly waiting tests, so it never becomes the tail.
    - one group per module with module-scoped fixtures (a torchrun run, a trained model shared by
      its tests): spread over workers, each worker would build them again.
    """
    for item in items:
        if any(item.iter_markers("xdist_group")):  # a group the test names itself stands
            continue
        if SLURM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif _uses_module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=lambda item: not _in_group(item, "slurm"))  # stable: the order within is kept


def _in_group(item: pytest.Item, name: str) -> bool:
    return any(name in (*m.args, m.kwargs.get("name")) for m in item.iter_markers("xdist_group"))


def _uses_module_fixtures(item: pytest.Item) -> bool:
    """A fixture of module scope that the test asks for (autouse ones, such as a module's thread
    setting, cost nothing to repeat)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        d.scope == "module" and not getattr(d, "_autouse", False) and name in info.names_closure
        for name, defs in info.name2fixturedefs.items()
        for d in defs
    )


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MDTUI_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("MDTUI_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    """A project directory with experiments.toml: `tiny` (CE) and `tiny-focal` (from tiny), group demo."""
    path = tmp_path / "experiments.toml"
    path.write_text(TINY_TOML, encoding="utf-8")
    return path


@pytest.fixture
def tiny_plan(tiny_toml: Path):
    from mdtui.registry.plan import load_plan

    return load_plan(tiny_toml)


@pytest.fixture
def store(tiny_plan):
    from mdtui.runs.store import RunStore

    return RunStore(tiny_plan.settings.runs_dir, experiments_file=tiny_plan.settings.path)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> str:
    """Route every supervisor to tests/fixtures/fake_engine.py (no torch, 50 ms epochs)."""
    cmd = f"{sys.executable} {FAKE_ENGINE}"
    monkeypatch.setenv("MDTUI_ENGINE_CMD", cmd)
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.05")
    return cmd


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> object:
    """Poll ``predicate`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def reap() -> Iterator[list[int]]:
    """Process groups a test started; anything still alive is killed at teardown."""
    import signal

    groups: list[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def controller_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every squeue from here on finds slurmctld silent (the one Slurm query a poll makes)."""
    from mdtui.system import slurm as slurm_cli

    def down(ids):
        raise slurm_cli.SlurmUnavailable("squeue did not answer in 2.5 s")

    monkeypatch.setattr(slurm_cli, "job_states", down)
