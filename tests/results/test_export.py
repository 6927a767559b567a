"""``mdtui export``: runs made by real supervisors (fake engine) exported as TensorBoard event files
(read back with TensorBoard's own EventAccumulator) and as CSV per metric plus summary.json
(mdtui/results/export.py, mdtui/commands/export.py)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from conftest import FAKE_ENGINE, TINY_TOML
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.execution import supervise
from mdtui.runs.prepare import create_run_for

pytestmark = pytest.mark.slow  # real supervisors
runner = CliRunner()


def invoke(toml: Path, *args: str):
    return runner.invoke(app, ["-f", str(toml), *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory):
    """tiny (completed), tiny-focal (completed, from tiny): the group "demo". Made once for the
    module (the tests only read them) by real supervisors running the fake engine."""
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    toml = tmp_path_factory.mktemp("export") / "experiments.toml"
    toml.write_text(TINY_TOML, encoding="utf-8")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    out = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDTUI_ENGINE_CMD", f"{sys.executable} {FAKE_ENGINE}")
        mp.setenv("FAKE_EPOCH_SECONDS", "0.05")
        for name in ("tiny", "tiny-focal"):
            rec = create_run_for(plan, store, plan.experiments[name], seed=0, devices=["cpu"])
            assert supervise.wait_supervisor(supervise.launch(store, rec.run_id, devices=["cpu"]), timeout=30)
            out.append(store.get(rec.run_id))
    assert [r.status for r in out] == ["completed", "completed"]
    return toml, out


@pytest.fixture
def tiny_toml(made):
    return made[0]


@pytest.fixture
def runs(made):
    return made[1]


def test_tensorboard_reads_back_scalars_hparams_and_per_class(tiny_toml, runs, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    out = tmp_path / "tb"
    result = invoke(tiny_toml, "export", "demo", str(out), "--format", "tensorboard")
    assert result.exit_code == 0, result.output
    assert "exported 2 runs" in result.output and "tensorboard --logdir" in result.output
    tiny = runs[0]
    acc = EventAccumulator(str(out / "tiny" / tiny.run_id), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"eval/acc1", "eval/acc5", "train/loss", "train/acc1", "lr", "step/loss", "per_class/000"} <= set(
        scalars
    )
    assert [(e.step, e.value) for e in acc.Scalars("eval/acc1")] == [(1, 50.0), (2, 60.0), (3, 70.0)]
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(12))  # 3 epochs x 4 steps
    assert [e.value for e in acc.Scalars("per_class/001")] == [50.0, 60.0, 70.0]
    # hyper-parameters: a session of the HParams plugin, trial id = the run id
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.group_name == tiny.run_id
    assert start.hparams["optim.lr"].number_value == 0.05 and start.hparams["loss.name"].string_value == "ce"
    assert start.hparams["model.name"].string_value == "resnet32" and "run_id" not in start.hparams
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS
    # the experiment at the root names the metrics and hyper-parameters of both runs
    root = EventAccumulator(str(out))
    root.Reload()
    experiment = metadata.parse_experiment_plugin_data(
        root.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG]
    )
    assert "eval/acc1" in [m.name.tag for m in experiment.metric_infos]
    assert "loss.gamma" in [h.name for h in experiment.hparam_infos]  # tiny-focal's focal loss
    assert (out / "tiny-focal" / runs[1].run_id).is_dir()


def test_csv_per_metric_and_a_json_summary(tiny_toml, runs, tmp_path) -> None:
    out = tmp_path / "csv"
    result = invoke(tiny_toml, "export", runs[0].run_id, "tiny-focal", str(out), "--format", "csv")
    assert result.exit_code == 0, result.output
    with open(out / "eval.acc1.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["run_id"], r["epoch"], float(r["value"])) for r in rows][:3] == [
        (runs[0].run_id, "1", 50.0),
        (runs[0].run_id, "2", 60.0),
        (runs[0].run_id, "3", 70.0),
    ]
    assert {r["experiment"] for r in rows} == {"tiny", "tiny-focal"}
    with open(out / "step.loss.csv", newline="") as fh:
        assert next(csv.reader(fh))[:5] == ["run_id", "experiment", "seed", "step", "value"]
    with open(out / "per_class.csv", newline="") as fh:
        per_class = list(csv.DictReader(fh))
    assert per_class[0]["class"] == "0" and float(per_class[-1]["accuracy"]) > 0
    summary = json.loads((out / "summary.json").read_text())["runs"]
    assert [s["run_id"] for s in summary] == [r.run_id for r in runs]
    assert summary[0]["best_acc1"] == 70.0 and summary[0]["best_epoch"] == 3
    assert summary[0]["per_class_last"] == [70.0, 70.0] and "eval/acc1" in summary[0]["metrics"]
    assert summary[1]["hparams"]["loss.name"] == "fl"


def test_a_missing_tensorboard_and_bad_arguments_are_clear(tiny_toml, tmp_path, monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")] or [
        "tensorboard"
    ]:
        monkeypatch.setitem(sys.modules, name, None)  # `import tensorboard...` raises ImportError
    missing = runner.invoke(app, ["-f", str(tiny_toml), "export", "tiny", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "pip install 'mdtui[tensorboard]'" in missing.output
    assert "--format csv" in missing.output and not (tmp_path / "o").exists()
    bad = runner.invoke(app, ["-f", str(tiny_toml), "export", "tiny", str(tmp_path / "o"), "--format", "xls"])
    assert bad.exit_code == 2 and "tensorboard, csv" in bad.output
    unknown = runner.invoke(
        app, ["-f", str(tiny_toml), "export", "nope", str(tmp_path / "o"), "--format", "csv"]
    )
    assert unknown.exit_code == 2 and 'no run or experiment "nope"' in unknown.output
