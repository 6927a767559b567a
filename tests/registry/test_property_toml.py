"""Property tests: any experiments.toml gives a valid Plan or a located ExperimentsError, never a traceback.

Documents are generated as data (random types for known keys, unknown keys, extends/from cycles,
sweeps, hostile names) and written as TOML text by a small emitter below; some are then torn or
spliced to exercise syntax errors. Every outcome is checked: a plan's configs pass
``engine.schema.validate.from_dict`` and its run directories stay inside ``runs_dir``; an error's issues all
carry a line number and a message.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.schema.config import LOSS_PARAMS, MODEL_NAMES, field_paths
from engine.schema.validate import from_dict
from mdtui.registry.plan import ExperimentsError, Plan, load_plan
from mdtui.system.fs import sanitize_name

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,  # the first examples import and warm caches; the total is bounded by max_examples
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

HOSTILE_NAMES = [
    "../x",
    "a/b",
    "a\\b",
    ".hidden",
    "..",
    ".",
    "con",
    "nul",
    "a\x00b",
    "a\nb",
    "tab\there",
    "x" * 300,
    "é" * 200,
    "名前-実験",
    "emoji-🙂",
    "with space",
    "[bracket]",
    "~",
    "$HOME",
    "",
    " ",
    "-leading-dash",
    "a`b*c_d|e<f>",
]
SETTINGS_KEYS = [
    "runs_dir",
    "results_log",
    "data_root",
    "exclude_devices",
    "device_order",
    "max_devices",
    "runs_per_device",
    "min_free_memory_mb",
    "max_utilization",
    "sweep_limit",
    "stop_grace_seconds",
]
MANAGER_KEYS = ["extends", "from", "group", "baseline", "tags", "description", "seeds", "seed", "gpus"]
ENGINE_PATHS = sorted(field_paths())

# --------------------------------------------------------------------------- TOML emitter


def toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def toml_document(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    for table in ("settings", "defaults"):
        if table in doc:
            lines.append(f"[{table}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in doc[table].items()]
            lines.append("")
    for name, body in doc.get("experiment", {}).items():
        lines.append(f"[experiment.{toml_string(name)}]")
        lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in body.items()]
        lines.append("")
    for key, value in doc.get("extra", {}).items():  # unknown top-level keys, after the tables
        lines.insert(0, f"{toml_string(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=-(10**40), max_value=10**40),  # past float and int64 range
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
any_value = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
names = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.text(min_size=1, max_size=24),
    st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
)
plausible_engine = st.fixed_dictionaries(
    {},
    optional={
        "epochs": st.one_of(st.integers(-2, 5), any_value),
        "batch_size": st.one_of(st.integers(1, 64), any_value),
        "model": st.one_of(st.sampled_from(MODEL_NAMES), st.sampled_from(["resnet99", ""]), any_value),
        "loss": st.one_of(
            st.sampled_from(sorted(LOSS_PARAMS)),
            st.fixed_dictionaries(
                {"name": st.sampled_from(sorted(LOSS_PARAMS))},
                optional={"threshold": st.floats(-1, 2), "gamma": any_value, "bogus": any_value},
            ),
            any_value,
        ),
        "optim": st.one_of(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["sgd", "adam", "rmsprop"])}, optional={"lr": scalars}
            ),
            any_value,
        ),
        "doctor": st.one_of(
            st.fixed_dictionaries({}, optional={"preset": any_value, "sift": any_value, "mask": any_value}),
            any_value,
        ),
        "data": st.one_of(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["synthetic", "cifar10", "nope"])},
                optional={
                    "root": st.sampled_from(["../../etc", "/tmp/x", "~/d", "a\x00b"]),
                    "num_classes": scalars,
                },
            ),
            any_value,
        ),
    },
)


clean_engine = st.fixed_dictionaries(
    {},
    optional={
        "epochs": st.integers(1, 3),
        "batch_size": st.integers(1, 64),
        "loss": st.one_of(
            st.sampled_from(["ce", "fl", "dfl", "balanced_softmax"]),
            st.fixed_dictionaries({"name": st.just("rfl")}, optional={"threshold": st.floats(0.01, 1.0)}),
        ),
        "optim": st.fixed_dictionaries(
            {"name": st.sampled_from(["sgd", "adam"])}, optional={"lr": st.floats(0, 1)}
        ),
        "model": st.sampled_from(MODEL_NAMES),
    },
)
clean_sweeps = st.dictionaries(
    st.sampled_from(["epochs", "batch_size", "optim.lr", "eval_batch_size"]),
    st.lists(st.integers(1, 9), min_size=1, max_size=4, unique=True),
    min_size=1,
    max_size=3,
)


@st.composite
def experiment_table(draw: st.DrawFn, all_names: list[str], clean: bool) -> dict[str, Any]:
    """One [experiment.X] body: ``clean`` ones are mostly valid, the others take any type anywhere."""
    if clean:
        body: dict[str, Any] = dict(draw(clean_engine))
        if draw(st.booleans()):
            body["group"] = draw(st.sampled_from(["g1", "g2"]))
        if draw(st.integers(0, 3)) == 0:
            body["baseline"] = True
        if draw(st.integers(0, 2)) == 0:
            body["seeds"] = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True))
        for key in ("extends", "from"):  # may form cycles through earlier or later tables
            if draw(st.integers(0, 3)) == 0:
                body[key] = draw(st.sampled_from(all_names))
        if draw(st.integers(0, 2)) == 0:
            body["sweep"] = draw(clean_sweeps)
        return body
    body = dict(draw(plausible_engine))
    for _ in range(draw(st.integers(0, 3))):  # any known key, any type
        body[draw(st.sampled_from(ENGINE_PATHS)).split(".")[0]] = draw(any_value)
    for key in draw(st.lists(st.sampled_from(MANAGER_KEYS), max_size=4, unique=True)):
        if key in ("extends", "from"):
            body[key] = draw(st.one_of(st.sampled_from(all_names), names, any_value))
        elif key == "seeds":
            body[key] = draw(st.one_of(st.lists(st.integers(0, 3), max_size=3), any_value))
        elif key == "seed":
            body[key] = draw(st.one_of(st.integers(), any_value))
        else:
            body[key] = draw(st.one_of(scalars, any_value, st.just(True), st.just("grp")))
    if draw(st.booleans()):
        sweep_keys = draw(
            st.lists(st.one_of(st.sampled_from(ENGINE_PATHS), st.text(max_size=10)), min_size=0, max_size=3)
        )
        body["sweep"] = {
            k: draw(
                st.one_of(st.lists(scalars, max_size=5), st.lists(st.integers(0, 9), max_size=40), any_value)
            )
            for k in sweep_keys
        }
    if draw(st.integers(0, 4)) == 0:
        body[draw(st.text(min_size=1, max_size=10))] = draw(any_value)  # an unknown key
    return body


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    clean = draw(st.booleans())
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        if clean:
            doc["settings"] = {
                "sweep_limit": draw(st.integers(1, 64)),
                "runs_dir": draw(st.sampled_from(["runs", "../out"])),
            }
        else:
            keys = draw(st.lists(st.one_of(st.sampled_from(SETTINGS_KEYS), st.text(max_size=8)), max_size=4))
            doc["settings"] = {
                k: draw(
                    st.one_of(any_value, st.integers(1, 4), st.sampled_from(["runs", "../out", "/tmp/r"]))
                )
                for k in keys
            }
    doc["defaults"] = {
        "epochs": 1,
        "model": "resnet32",
        "data": {"name": "synthetic", "num_classes": 3, "samples_per_class": 4, "image_size": 8},
    }
    if not clean and draw(st.integers(0, 3)) == 0:
        doc["defaults"].update(draw(plausible_engine))
    name_pool = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True) if clean else names
    all_names = draw(st.lists(name_pool, min_size=1, max_size=5, unique=True))
    if clean and draw(st.integers(0, 3)) == 0:
        all_names[0] = draw(st.sampled_from(HOSTILE_NAMES))  # one hostile name among valid tables
    all_names = list(dict.fromkeys(all_names))
    doc["experiment"] = {name: draw(experiment_table(all_names, clean)) for name in all_names}
    if not clean and draw(st.integers(0, 5)) == 0:
        doc["extra"] = {draw(st.text(min_size=1, max_size=8)): draw(scalars)}
    return doc


@st.composite
def texts(draw: st.DrawFn) -> str:
    text = toml_document(draw(documents()))
    damage = draw(st.integers(0, 19))
    if damage == 0:  # torn file
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 1:  # a line of garbage somewhere
        lines = text.splitlines()
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
        text = "\n".join(lines)
    return text


# --------------------------------------------------------------------------- checking one outcome


def check_outcome(path: Path) -> Plan | None:
    try:
        plan = load_plan(path, env={})
    except ExperimentsError as exc:
        assert exc.issues, "an ExperimentsError must list its issues"
        for issue in exc.issues:
            assert isinstance(issue.line, int) and issue.line >= 1, f"issue without a line: {issue}"
            assert isinstance(issue.message, str) and issue.message.strip(), (
                f"issue without a message: {issue}"
            )
            assert issue.format()  # printable
        return None
    runs_dir = plan.settings.runs_dir.resolve()
    per_table: dict[str, int] = {}
    for exp in plan.experiments.values():
        from_dict(exp.config)  # raises ConfigError (failing the test) when the plan is not runnable
        assert exp.seeds and all(isinstance(s, int) for s in exp.seeds)
        for seed in exp.seeds:  # what the engine is handed for each run
            from_dict({**exp.config, "seed": seed, "run_id": "20250101-000000-abcd"})
        run_dir = (runs_dir / sanitize_name(exp.name) / "20250101-000000-abcd").resolve()
        assert run_dir.parent.parent == runs_dir, f"{exp.name!r} escapes the runs directory"
        per_table[exp.table] = per_table.get(exp.table, 0) + 1
    assert all(n <= plan.settings.sweep_limit for n in per_table.values())
    return plan


@PROPERTY_SETTINGS
@given(text=texts())
def test_any_document_is_a_plan_or_a_located_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiments.toml"
        path.write_text(text, encoding="utf-8")
        check_outcome(path)


@PROPERTY_SETTINGS
@given(name=names)
def test_hostile_experiment_names_never_escape(name: str) -> None:
    doc = {
        "defaults": {"epochs": 1, "data": {"name": "synthetic", "num_classes": 3}},
        "experiment": {name: {"loss": "ce"}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiments.toml"
        path.write_text(toml_document(doc), encoding="utf-8")
        plan = check_outcome(path)
    if plan is not None:
        (exp,) = plan.experiments.values()
        assert exp.name == name
        dirname = sanitize_name(exp.name)
        assert dirname not in ("", ".", "..") and "/" not in dirname and "\x00" not in dirname
        assert len(dirname.encode()) <= 255  # a valid directory name on every Linux filesystem


# --------------------------------------------------------------------------- explicit cases


@pytest.mark.parametrize(
    "sweep",
    [
        {f"loss.k{i}": list(range(50)) for i in range(4)},  # unknown keys: refused before any product
        {"epochs": list(range(1, 101)), "batch_size": list(range(1, 101)), "seed": [1]},
        {
            "epochs": list(range(1, 60)),
            "batch_size": list(range(1, 60)),
            "eval_batch_size": list(range(1, 60)),
        },
    ],
)
def test_huge_sweeps_are_refused_quickly(tmp_path: Path, sweep: dict[str, list[int]]) -> None:
    doc = {
        "defaults": {"epochs": 1, "data": {"name": "synthetic", "num_classes": 3}},
        "experiment": {"big": {"sweep": sweep}},
    }
    path = tmp_path / "experiments.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    started = time.process_time()  # CPU time: parallel test workers make wall clock wait for a core
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    assert time.process_time() - started < 2.0
    assert all(i.line >= 1 for i in info.value.issues)


def test_sweep_past_the_limit_names_the_limit(tmp_path: Path) -> None:
    doc = {
        "settings": {"sweep_limit": 10},
        "defaults": {"epochs": 1, "data": {"name": "synthetic", "num_classes": 3}},
        "experiment": {"big": {"sweep": {"epochs": list(range(1, 5)), "batch_size": [1, 2, 3]}}},
    }
    path = tmp_path / "experiments.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    (issue,) = info.value.issues
    assert "12" in issue.message and "sweep_limit = 10" in issue.message and issue.line >= 1
    doc["settings"]["sweep_limit"] = 12
    path.write_text(toml_document(doc), encoding="utf-8")
    assert len(load_plan(path, env={}).experiments) == 12


@pytest.mark.parametrize(
    "body",
    [
        {"optim": {"name": "sgd", "lr": 10**400}},  # an integer past float range
        {"epochs": 10**30},
        {"doctor": {"preset": [1]}},  # an unhashable preset
        {"doctor": {"preset": {"a": 1}}},
        {"loss": {"name": ["ce"]}},
        {"model": {"name": {"x": 1}}},
        {"seed": 10**30},
        {"seeds": [1, 2**64]},
        {"data": {"name": "synthetic", "num_classes": 3, "image_size": 1e300}},
    ],
)
def test_known_crashers_are_located_errors(tmp_path: Path, body: dict[str, Any]) -> None:
    doc = {
        "defaults": {"epochs": 1, "data": {"name": "synthetic", "num_classes": 3}},
        "experiment": {"e": body},
    }
    path = tmp_path / "experiments.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    check_outcome(path)


@pytest.mark.parametrize("value", [10**400, -(10**400), 1e400])
def test_settings_with_out_of_range_numbers(tmp_path: Path, value: Any) -> None:
    doc = {"settings": {"stop_grace_seconds": value, "max_devices": value}, "experiment": {"e": {}}}
    path = tmp_path / "experiments.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    check_outcome(path)


def test_extends_and_from_cycles_are_located(tmp_path: Path) -> None:
    doc = {
        "defaults": {"epochs": 1, "data": {"name": "synthetic", "num_classes": 3}},
        "experiment": {
            "a": {"extends": "b"},
            "b": {"extends": "c"},
            "c": {"extends": "a"},
            "x": {"from": "y"},
            "y": {"from": "x"},
            "self": {"from": "self"},
        },
    }
    path = tmp_path / "experiments.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    with pytest.raises(ExperimentsError) as info:
        load_plan(path, env={})
    messages = [i.message for i in info.value.issues]
    assert any("extends cycle" in m for m in messages)
    assert any("from cycle" in m for m in messages)
    assert all(i.line >= 1 for i in info.value.issues)


@pytest.mark.parametrize(
    "line", ["x = { ] }", "x = { a = 1 ] }", "x = [ } ]", "x = { a = { b = ] } }", "x = [1, }, 2]"]
)
def test_stray_closing_brackets_never_hang_the_line_scanner(tmp_path: Path, line: str) -> None:
    """The scanner that locates keys for error messages looped forever on a `]` inside `{ }` (or a
    `}` inside `[ ]`): hypothesis found it as a damaged file. A thread, so a hang fails the test."""
    import threading

    path = tmp_path / "experiments.toml"
    path.write_text(f"[experiment.a]\n{line}\n", encoding="utf-8")
    done = threading.Event()

    def load() -> None:
        check_outcome(path)
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(20), f"load_plan did not return on {line!r}"
