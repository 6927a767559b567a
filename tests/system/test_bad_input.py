"""Bad input (issue 8): corrupt checkpoints, garbage in events.jsonl, missing or malformed data.

Each case must end in a clear message naming the offending file, never a traceback, and lose nothing:
the engine reports ``run_finished{failed}`` with the path, the readers skip what they cannot parse.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from engine.schema.events import encode, make_event, read_events

# --------------------------------------------------------------------------- helpers

TINY = {
    "run_id": "bad-input",
    "epochs": 1,
    "batch_size": 16,
    "eval_batch_size": 64,
    "model": "resnet32",
    "data": {
        "name": "synthetic",
        "num_classes": 3,
        "samples_per_class": 8,
        "test_per_class": 4,
        "image_size": 8,
        "num_workers": 0,
    },
    "optim": {"name": "sgd", "lr": 0.05},
}


def _config(**over: Any) -> dict[str, Any]:
    cfg = json.loads(json.dumps(TINY))
    for key, value in over.items():
        renamed = isinstance(value, dict) and "name" in value  # another dataset: its own keys only
        if isinstance(value, dict) and isinstance(cfg.get(key), dict) and not renamed:
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def _finished(run_dir: Path) -> dict[str, Any]:
    events = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, dict)]
    assert events and events[-1]["type"] == "run_finished", events[-3:]
    return events[-1]


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _bad_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """A good checkpoint of the tiny model and six broken ones."""
    import torch

    from engine.schema.validate import from_dict
    from engine.sinks import ListSink
    from engine.train import run

    torch.set_num_threads(1)  # a tiny model gains nothing from threads fighting other test processes
    good_dir = tmp_path / "good"
    good_dir.mkdir()
    assert run(from_dict(_config()), good_dir, ListSink()) == "completed"
    good = good_dir / "checkpoints" / "last.pt"
    data = good.read_bytes()
    out = {"good": good}
    for kind, content in {
        "garbage": os.urandom(4096),
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "text": b"this is not a checkpoint\n",
    }.items():
        out[kind] = tmp_path / f"{kind}.pt"
        out[kind].write_bytes(content)
    out["pickle"] = tmp_path / "pickle.pt"
    torch.save({"model": {}, "x": _Exploit()}, out["pickle"])
    out["tensor"] = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), out["tensor"])
    return out


# --------------------------------------------------------------------------- checkpoints (in process)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    return _bad_checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "text", "pickle", "tensor"])
def test_from_a_corrupt_checkpoint_fails_naming_the_file(
    tmp_path: Path, checkpoints, kind: str, capsys
) -> None:
    from engine.schema.validate import from_dict
    from engine.sinks import ListSink
    from engine.train import run

    sink = ListSink()
    status = run(from_dict(_config(init_checkpoint=str(checkpoints[kind]))), tmp_path, sink)
    assert status == "failed"
    final = sink.events[-1]
    assert final["type"] == "run_finished" and final["status"] == "failed"
    assert str(checkpoints[kind]) in final["error"]
    assert "Traceback" not in capsys.readouterr().err  # a user mistake, not a bug
    assert not sink.of_type("epoch")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "pickle"])
def test_resume_from_a_corrupt_last_checkpoint_fails_and_keeps_it(
    tmp_path: Path, checkpoints, kind: str
) -> None:
    from engine.schema.validate import from_dict
    from engine.sinks import ListSink
    from engine.train import run

    last = tmp_path / "checkpoints" / "last.pt"
    last.parent.mkdir()
    last.write_bytes(checkpoints[kind].read_bytes())
    best = tmp_path / "checkpoints" / "best.pt"
    best.write_bytes(checkpoints["good"].read_bytes())
    sink = ListSink()
    assert run(from_dict(_config(epochs=2)), tmp_path, sink, resume=True) == "failed"
    assert str(last) in sink.events[-1]["error"]
    assert last.read_bytes() == checkpoints[kind].read_bytes()  # evidence untouched
    assert best.read_bytes() == checkpoints["good"].read_bytes()  # nothing lost


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path: Path, checkpoints) -> None:
    from engine.schema.validate import from_dict
    from engine.sinks import ListSink
    from engine.train import run

    cfg = _config(init_checkpoint=str(checkpoints["good"]), data={"num_classes": 5})
    sink = ListSink()
    assert run(from_dict(cfg), tmp_path, sink) == "failed"
    error = sink.events[-1]["error"]
    assert str(checkpoints["good"]) in error and "does not fit" in error


# --------------------------------------------------------------------------- the engine process


def _engine_cases(root: Path, checkpoints: dict[str, Path]) -> dict[str, tuple[Path, list[str]]]:
    """Run directories for each bad-input case of ``python -m engine RUN_DIR``."""
    cases: dict[str, tuple[Path, list[str]]] = {}

    def make(name: str, cfg: dict[str, Any], *args: str) -> Path:
        run_dir = root / name
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({**cfg, "run_id": name}))
        cases[name] = (run_dir, list(args))
        return run_dir

    make("missing-root", _config(data={"name": "cifar10", "root": str(root / "no-such-dir")}))
    make("missing-folder-root", _config(data={"name": "image_folder", "root": str(root / "no-such-dir")}))
    make("unset-root", _config(data={"name": "cifar10"}))
    wrong = root / "wrong-format"
    batches = wrong / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (batches / name).write_text("these are not pickles\n")
    make("wrong-format", _config(data={"name": "cifar10", "root": str(wrong)}))
    shape = root / "wrong-shape" / "cifar-10-batches-py"
    shape.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (shape / name).write_bytes(pickle.dumps({"data": [1, 2, 3], "labels": [0]}, protocol=2))
    make("wrong-shape", _config(data={"name": "cifar10", "root": str(shape.parent)}))
    folders = root / "flat-folder"
    folders.mkdir()
    (folders / "img.png").write_bytes(b"not a png")
    make("image-folder", _config(data={"name": "image_folder", "root": str(folders)}))
    run_dir = make("resume-truncated", _config(epochs=2), "--resume")
    (run_dir / "checkpoints" / "last.pt").write_bytes(checkpoints["truncated"].read_bytes())
    make("resume-missing", _config(epochs=2), "--resume")
    make("from-garbage", _config(init_checkpoint=str(checkpoints["garbage"])))
    return cases


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory: pytest.TempPathFactory, checkpoints) -> dict[str, tuple[Path, int, str]]:
    """Every case run as a real engine process, all at once (one torch import each, in parallel)."""
    root = tmp_path_factory.mktemp("engine-bad-input")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("MDTUI_DATA_ROOT", None)
    procs = {}
    for name, (run_dir, args) in _engine_cases(root, checkpoints).items():
        procs[name] = (
            run_dir,
            subprocess.Popen(
                [sys.executable, "-m", "engine", str(run_dir), *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=root,
            ),
        )
    out = {}
    for name, (run_dir, proc) in procs.items():
        _, err = proc.communicate(timeout=120)
        out[name] = (run_dir, proc.returncode, err)
    return out


EXPECTED_IN_ERROR = {
    "missing-root": "no-such-dir",
    "missing-folder-root": "no-such-dir",
    "unset-root": "no data root",
    "wrong-format": "data_batch_1",
    "wrong-shape": "data_batch_1",
    "image-folder": "flat-folder",
    "resume-truncated": "last.pt",
    "resume-missing": "last.pt",
    "from-garbage": "garbage.pt",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(EXPECTED_IN_ERROR))
def test_engine_process_reports_bad_input_clearly(engine_runs, case: str) -> None:
    run_dir, code, err = engine_runs[case]
    assert code == 1, f"exit {code}: {err[-2000:]}"
    final = _finished(run_dir)
    assert final["status"] == "failed"
    assert EXPECTED_IN_ERROR[case] in final["error"], final["error"]
    assert "Traceback" not in err, err[-2000:]


# --------------------------------------------------------------------------- events.jsonl with garbage


def _garbage_events(run_id: str) -> bytes:
    good = [
        make_event("run_started", run_id, t=1.0, config={}, total_epochs=3, steps_per_epoch=2),
        make_event(
            "epoch",
            run_id,
            t=2.0,
            epoch=0,
            lr=0.1,
            seconds=1.0,
            train={"loss": 1.0, "acc1": 40.0},
            eval={"loss": 1.2, "acc1": 42.0, "acc5": 90.0},
            best_acc1=42.0,
            best_epoch=0,
        ),
        make_event(
            "epoch",
            run_id,
            t=3.0,
            epoch=1,
            lr=0.05,
            seconds=1.0,
            train={"loss": 0.8, "acc1": 50.0},
            eval={"loss": 1.0, "acc1": 55.5, "acc5": 95.0},
            best_acc1=55.5,
            best_epoch=1,
        ),
    ]
    finished = make_event(
        "run_finished",
        run_id,
        t=4.0,
        status="completed",
        summary={"best_acc1": 55.5, "best_epoch": 1, "last_acc1": 55.5, "epochs_done": 2},
    )
    junk = [
        b"\xff\xfe\x00 binary junk \x80\x81",
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b"NaN",
        b'{"v": 99, "type": "epoch", "epoch": 7}',
        b'{"type": 5}',
        b'{"v": 1, "type": "epoch"}',
        b'{"v": 1, "type": "epoch", "epoch": "x", "eval": "nope", "train": [1], "best_acc1": "high"}',
        b'{"v": 1, "type": "step", "epoch": null, "step": "s", "loss": "l"}',
        b'{"v": 1, "type": "log"}',
        b'{"v": 1, "type": "checkpoint", "path": 5}',
        b"[" * 100_000,  # deep nesting: json's recursion limit
        b"x" * 300_000,  # a very long line
        b"   ",
        b"",
    ]
    lines = [encode(good[0]).encode(), junk[0], junk[1]]
    lines += [encode(good[1]).encode(), *junk[2:]]
    lines += [encode(good[2]).encode(), encode(finished).encode()]
    return b"\n".join(lines) + b"\n" + b'{"v": 1, "type": "log", "msg": "torn'  # a torn last line


def test_garbage_lines_in_events_are_skipped_everywhere(tmp_path: Path, tiny_toml: Path) -> None:
    from mdtui.registry.plan import load_plan
    from mdtui.results.log import record_finished
    from mdtui.results.report import render_report
    from mdtui.runs.rundir import read_run_state
    from mdtui.runs.store import RunStore

    plan = load_plan(tiny_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    rec = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=0, devices=["cpu"])
    run_dir = Path(rec.run_dir)
    (run_dir / "events.jsonl").write_bytes(_garbage_events(rec.run_id))
    (run_dir / "exit.json").write_text(json.dumps({"status": "completed", "exit_code": 0}))

    parsed = read_events(run_dir / "events.jsonl")
    protocol = [e for e in parsed if isinstance(e, dict)]
    assert [e["type"] for e in protocol][:2] == ["run_started", "epoch"]
    assert protocol[-1]["type"] == "run_finished"
    state = read_run_state(run_dir)
    assert state.status == "completed" and state.best_acc1 == 55.5

    assert store.reindex() == 1
    indexed = store.get(rec.run_id)
    assert indexed.status == "completed" and indexed.best_acc1 == 55.5 and indexed.epochs_done == 2
    record_finished(store, rec.run_id, plan=plan)
    log = plan.settings.results_log.read_text(encoding="utf-8")
    assert rec.run_id in log and "55.50%" in log
    report = render_report(store, plan, ["demo"])
    assert "55.5" in report


def test_wrongly_typed_summary_fields_do_not_break_the_index(tmp_path: Path, tiny_toml: Path) -> None:
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    plan = load_plan(tiny_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    rec = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=0, devices=["cpu"])
    run_dir = Path(rec.run_dir)
    bad = make_event(
        "run_finished",
        rec.run_id,
        status="completed",
        summary={
            "epochs_done": "three",
            "best_acc1": "high",
            "acc5": [1],
            "many": {"a": 1},
            "best_epoch": "x",
        },
    )
    (run_dir / "events.jsonl").write_text(encode(bad) + "\n")
    (run_dir / "exit.json").write_text(json.dumps({"status": "completed", "exit_code": 0}))
    assert store.reindex() == 1
    indexed = store.get(rec.run_id)
    assert indexed.status == "completed"
    assert indexed.epochs_done == 0 and indexed.acc5 is None and indexed.many is None


def test_a_corrupt_run_json_or_exit_json_does_not_stop_reindex(tiny_toml: Path) -> None:
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    plan = load_plan(tiny_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    broken = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=0, devices=["cpu"])
    torn_exit = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=1, devices=["cpu"])
    fine = store.create_run(plan.experiments["tiny"], {"epochs": 3}, seed=2, devices=["cpu"])
    (Path(broken.run_dir) / "run.json").write_text('{"run_id": "x", "experi')
    (Path(torn_exit.run_dir) / "exit.json").write_text('{"status": "compl')
    assert store.reindex() == 2
    assert store.get(fine.run_id) is not None and store.get(torn_exit.run_id) is not None


# --------------------------------------------------------------------------- experiments.toml that crashed validate


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDTUI_")}
    return subprocess.run(
        [sys.executable, "-m", "mdtui", "validate", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("tags = " + "[" * 500 + "]" * 500, 3),  # arrays
        ("loss = " + "{ a = " * 500 + "1" + " }" * 500, 3),  # inline tables
        ("doctor = " + "{ a = [" * 250 + "] }" * 250, 3),  # both
        ("loss." + "a." * 500 + "b = 1", 3),  # dotted keys
    ],
    ids=["arrays", "inline-tables", "mixed", "dotted-keys"],
)
def test_deep_nesting_is_a_located_error_not_a_recursion_error(tmp_path: Path, value: str, line: int) -> None:
    result = _validate(tmp_path, f"[experiment.deep]\nepochs = 1\n{value}\n")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert f"experiments.toml:{line}:" in result.stderr and "nested more than 64 levels" in result.stderr


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("optim = { lr = inf }", "optim.lr"),
        ("optim = { weight_decay = nan }", "optim.weight_decay"),
        ('loss = { name = "fl", gamma = -inf }', "loss.gamma"),
        ("data = { val_fraction = nan }", "data.val_fraction"),
    ],
)
def test_non_finite_numbers_fail_validate(tmp_path: Path, line: str, key: str) -> None:
    """TOML allows inf and nan; they used to pass validate and crash `mdtui run` with a ValueError."""
    result = _validate(tmp_path, f'[experiment.x]\nmodel = "resnet32"\n{line}\n')
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f'experiments.toml:3: experiment "x", key {key}: must be a finite number' in result.stderr


def test_a_long_extends_chain_resolves_each_table_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 tables, each extending the previous one: 1,000 merges (was one per ancestor: ~500,000,
    4-16 s). Counted rather than timed, so the test is exact on any machine."""
    import mdtui.registry.build as build_module
    from mdtui.registry.plan import load_plan

    tables = ['[defaults]\ndata = { name = "synthetic", num_classes = 10 }\n\n[experiment.t0]\nepochs = 2\n']
    for i in range(1, 1000):
        tables.append(
            f'[experiment.t{i}]\nextends = "t{i - 1}"\nloss = {{ name = "refl", threshold = 0.{i % 9 + 1} }}\n'
        )
    path = tmp_path / "experiments.toml"
    path.write_text("\n".join(tables), encoding="utf-8")
    merges = []
    real_merge = build_module.merge
    monkeypatch.setattr(build_module, "merge", lambda *a, **k: merges.append(1) or real_merge(*a, **k))
    plan = load_plan(path, env={})
    assert len(plan.experiments) == 1000 and len(merges) == 1000
    last = plan.experiments["t999"].config
    assert last["epochs"] == 2 and last["loss"]["threshold"] == 0.1  # from t0 and t999 itself
