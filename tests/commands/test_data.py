"""`mdtui data`, `mdtui data get` (against a loopback mirror), `validate --data`, and the pre-flight
that keeps `mdtui run` / `queue add` from creating a run whose dataset is missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from download_helpers import Mirror, serve_mirror, write_manifest
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.registry.data_presence import data_problem
from mdtui.registry.plan import load_plan
from mdtui.runs.store import DB_NAME, RunStore

runner = CliRunner()

CIFAR_TOML = """\
[settings]
runs_dir = "runs"
results_log = "RESULTS.md"
data_root = "data"

[defaults]
epochs = 1
batch_size = 16
model = "resnet32"
optim = { name = "sgd", lr = 0.05 }

[experiment.c10]
group = "c10"
baseline = true
data = { name = "cifar10", num_workers = 0 }

[experiment.lists]
group = "lists"
data = { name = "oltr", train_list = "ImageNet_LT/ImageNet_LT_train.txt", eval_list = "ImageNet_LT/ImageNet_LT_test.txt", num_classes = 10 }

[experiment.digits]
group = "demo"
data = { name = "digits", num_workers = 0 }
"""


@pytest.fixture
def project(tmp_path: Path, fake_engine: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", "0")
    (tmp_path / "data").mkdir()
    path = tmp_path / "experiments.toml"
    path.write_text(CIFAR_TOML, encoding="utf-8")
    return path


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    with serve_mirror() as state:
        yield state


def invoke(toml: Path, *args: str):
    return runner.invoke(app, ["-f", str(toml), *args], catch_exceptions=False)


def nothing_created(toml: Path) -> None:
    runs = toml.parent / "runs"
    if (runs / DB_NAME).exists():
        assert RunStore(runs).list_runs() == []
    assert not [p for p in runs.glob("*") if p.is_dir() and p.name[:1].isdigit()] if runs.exists() else True
    assert not (toml.parent / "RESULTS.md").exists()


def test_data_problem_names_the_fix(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = load_plan(project)
    problem = data_problem(plan.experiments["c10"], plan.settings)
    assert problem is not None and problem.dataset == "cifar10"
    assert "mdtui data get cifar10" in problem.message and str(project.parent / "data") in problem.message
    lists = data_problem(plan.experiments["lists"], plan.settings)
    assert lists is not None and "mdtui data get imagenet_lt" in lists.message
    assert data_problem(plan.experiments["digits"], plan.settings) is None  # embedded
    monkeypatch.setenv("MDTUI_DATA_CHECK", "off")
    assert data_problem(plan.experiments["c10"], plan.settings) is None


def test_no_data_root_says_how_to_set_one(tmp_path: Path) -> None:
    toml = tmp_path / "experiments.toml"
    toml.write_text(CIFAR_TOML.replace('data_root = "data"\n', ""), encoding="utf-8")
    plan = load_plan(toml)
    problem = data_problem(plan.experiments["c10"], plan.settings)
    assert (
        problem is not None
        and "MDTUI_DATA_ROOT" in problem.message
        and "mdtui data get cifar10" in problem.message
    )


def test_run_and_queue_add_refuse_before_any_run_exists(project: Path) -> None:
    ran = invoke(project, "run", "c10")
    assert ran.exit_code != 0 and "mdtui data get cifar10" in ran.output
    nothing_created(project)
    queued = invoke(project, "queue", "add", "c10")
    assert queued.exit_code == 2 and "mdtui data get cifar10" in queued.output
    nothing_created(project)


def test_listing_get_and_validate(project: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = invoke(project, "data", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {r["dataset"]: r for r in json.loads(listed.stdout)["datasets"]}
    assert rows["cifar10"]["state"] == "missing" and rows["digits"]["ok"]
    assert {"cifar100", "stl10", "synthetic", "image_mask"} <= set(rows)
    assert rows["oltr (lists)"]["fix"].endswith("`mdtui data get imagenet_lt`")
    assert invoke(project, "validate", "--data").exit_code == 1

    manifest = write_manifest(project.parent)
    got = invoke(project, "data", "get", "cifar10", "--mirror", mirror.url, "--manifest", str(manifest))
    assert got.exit_code == 0, got.output
    assert "cifar10: ready" in got.output and mirror.requests[0][0] == "cifar-10-python.tar.gz"

    rows = {r["dataset"]: r for r in json.loads(invoke(project, "data", "--json").stdout)["datasets"]}
    assert rows["cifar10"]["state"].startswith("damaged")  # the tiny archive is not the real CIFAR-10
    monkeypatch.setenv("MDTUI_DATA_MANIFEST", str(manifest))  # ... but the one the manifest vouches for
    rows = {r["dataset"]: r for r in json.loads(invoke(project, "data", "--json").stdout)["datasets"]}
    assert rows["cifar10"]["ok"] and rows["cifar10"]["state"].startswith("intact")
    batch = project.parent / "data" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\0")  # damaged in place
    rows = {r["dataset"]: r for r in json.loads(invoke(project, "data", "--json").stdout)["datasets"]}
    assert rows["cifar10"]["state"] == "damaged: data_batch_2 fails its MD5"
    assert data_problem(load_plan(project).experiments["c10"], load_plan(project).settings) is None


def test_a_failed_download_fails_the_command(project: Path, mirror: Mirror) -> None:
    """(Corrupted and cut downloads: tests/engine/data/test_download.py; here the exit status and message.)"""
    mirror.files.clear()
    got = invoke(project, "data", "get", "cifar10", "--mirror", mirror.url)
    assert got.exit_code == 1 and "HTTP 404" in got.output
    assert not (project.parent / "data" / "cifar-10-batches-py").exists()


def test_by_hand_datasets_say_what_to_obtain(project: Path) -> None:
    out = invoke(project, "data", "get", "imagenet_lt")
    assert out.exit_code == 0
    assert "ImageNet_LT_train.txt" in out.output and "image-net.org" in out.output
    unknown = invoke(project, "data", "get", "cifr10")
    assert unknown.exit_code == 2 and "cifar10" in unknown.output


def test_the_tui_refuses_to_start_or_queue_it(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TUI's start and queue keys go through Dashboard.start_now / enqueue."""
    from mdtui.views.dashboard import Dashboard

    monkeypatch.setenv("MDTUI_FAKE_GPUS", "1")  # a free device: the start itself must refuse
    board = Dashboard(project)
    board.refresh(with_devices=False)
    started, _, errors = board.start_now(["c10"])
    assert started == [] and any("mdtui data get cifar10" in e for e in errors)
    assert any("mdtui data get cifar10" in e for e in board.enqueue(["c10"]))
    nothing_created(project)


def test_run_of_several_starts_none_when_one_lacks_its_data(project: Path) -> None:
    """The pre-flight covers every named experiment before the first run starts."""
    ran = invoke(project, "run", "digits", "c10", "--detach")
    assert ran.exit_code != 0 and "mdtui data get cifar10" in ran.output
    nothing_created(project)


def test_the_tui_never_shows_a_data_less_experiment_as_queued(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no free device the TUI queues what it cannot start; a missing dataset is an error instead."""
    from mdtui.views.dashboard import Dashboard

    monkeypatch.setenv("MDTUI_FAKE_GPUS", "")  # no GPU: the CPU only, which the TUI does not pick alone
    board = Dashboard(project)
    board.refresh(with_devices=False)
    started, deferred, errors = board.start_now(["c10"])
    assert started == [] and "c10" not in deferred
    assert any("mdtui data get cifar10" in e for e in errors)
    nothing_created(project)
