"""Event protocol v1: encoder, tolerant parser, incremental tail and the reducer on golden fixtures."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.schema.events import (
    MAX_LOG_LINES,
    MAX_STEP_POINTS,
    EventTail,
    RunState,
    TextLine,
    UnknownEvent,
    apply_event,
    encode,
    make_event,
    parse_line,
    read_events,
    reduce_events,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "events"


def reduce_fixture(name: str) -> RunState:
    return reduce_events(read_events(FIXTURES / f"{name}.jsonl"))


# --------------------------------------------------------------------------- encode


def test_encode_writes_nonfinite_as_null_everywhere():
    event = make_event(
        "epoch", "r", t=1.0, loss=float("nan"), train={"loss": float("inf"), "hist": [1.0, -math.inf]}
    )
    line = encode(event)
    assert "NaN" not in line and "Infinity" not in line and "\n" not in line
    back = json.loads(line)
    assert back["loss"] is None and back["train"] == {"loss": None, "hist": [1.0, None]}
    assert (back["v"], back["type"], back["run_id"], back["t"]) == (1, "epoch", "r", 1.0)


def test_encode_numpy_scalars_and_tuples():
    line = encode(
        make_event(
            "step", "r", t=0.0, loss=np.float32(0.5), step=np.int64(3), shape=(1, 2), bad=np.float64("nan")
        )
    )
    back = json.loads(line)
    assert back["loss"] == 0.5 and back["step"] == 3 and back["shape"] == [1, 2] and back["bad"] is None


def test_make_event_sets_time():
    assert make_event("log", "r", level="info", msg="x")["t"] > 1e9


# --------------------------------------------------------------------------- parse_line


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),
        ("   \n", None),
        ("plain text", TextLine("plain text")),
        ("[1, 2]", TextLine("[1, 2]")),
        ('{"no": "type"}', TextLine('{"no": "type"}')),
        ("{torn", TextLine("{torn")),
    ],
)
def test_parse_line_tolerates_non_events(raw, expected):
    assert parse_line(raw) == expected


def test_parse_line_unknown_type_and_version():
    assert isinstance(parse_line('{"v": 1, "type": "gpu_stats"}'), UnknownEvent)
    assert isinstance(parse_line('{"v": 2, "type": "epoch"}'), UnknownEvent)


def test_parse_line_event_bytes_and_crlf():
    line = encode(make_event("log", "r", t=1.0, level="info", msg="héllo")) + "\r\n"
    parsed = parse_line(line.encode("utf-8"))
    assert isinstance(parsed, dict) and parsed["msg"] == "héllo"
    assert isinstance(parse_line(b"\xff\xfe garbage"), TextLine)  # invalid UTF-8 never raises


# --------------------------------------------------------------------------- EventTail


def test_event_tail_reads_incrementally_and_waits_for_torn_line(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []  # no file yet
    first = encode(make_event("run_started", "r", t=1.0, total_epochs=2))
    second = encode(make_event("epoch", "r", t=2.0, epoch=0, eval={"acc1": 50.0}))
    path.write_text(first + "\n" + second[:20], encoding="utf-8")
    got = tail.read_new()
    assert [e["type"] for e in got] == ["run_started"]
    assert tail.read_new() == []  # nothing new, torn line still pending
    with path.open("a", encoding="utf-8") as fh:
        fh.write(second[20:] + "\n")
    got = tail.read_new()
    assert len(got) == 1 and got[0]["type"] == "epoch" and got[0]["eval"]["acc1"] == 50.0
    assert tail.offset == path.stat().st_size


def test_event_tail_multibyte_split_across_reads(tmp_path):
    path = tmp_path / "events.jsonl"
    line = encode(make_event("log", "r", t=1.0, level="info", msg="ρ=100 ✓")).encode("utf-8") + b"\n"
    cut = line.index("✓".encode()) + 1  # inside the 3-byte character
    path.write_bytes(line[:cut])
    tail = EventTail(path)
    assert tail.read_new() == []
    with path.open("ab") as fh:
        fh.write(line[cut:])
    assert tail.read_new()[0]["msg"] == "ρ=100 ✓"


def test_read_events_leaves_out_the_torn_last_line():
    events = read_events(FIXTURES / "truncated.jsonl")
    assert [e["type"] for e in events][-1] == "step"
    raw = (FIXTURES / "truncated.jsonl").read_text()
    assert not raw.endswith("\n")


# --------------------------------------------------------------------------- reducer on fixtures


def test_reducer_ok():
    s = reduce_fixture("ok")
    assert s.status == "completed" and s.finished and s.run_id == "20240101-120000-ab12"
    assert (s.best_acc1, s.best_epoch) == (61.5, 1)
    assert s.total_epochs == 3 and s.steps_per_epoch == 4 and s.device == "cpu"
    assert [e.epoch for e in s.epochs] == [0, 1, 2] and s.epochs_done == 3
    assert [e.eval_acc1 for e in s.epochs] == [50.0, 61.5, 60.25]
    assert s.epochs[0].train_loss == 1.5 and s.epochs[2].seconds == 9.5
    assert len(s.step_losses) == 12 and s.step_losses[5] == (1.25, 1.9)  # epoch 1, step 1 of 4
    assert len(s.checkpoints) == 3 and s.checkpoints[1]["is_best"] is True
    assert s.artifacts == ({"kind": "plot", "path": "artifacts/curves.png", "summary": {"epochs": 3}},)
    assert s.logs == ("[info] training done",)
    assert s.summary["last_acc1"] == 60.25 and s.error is None
    assert s.last_eval["many"] == 65.25 and s.finished_t == 1700000032.0
    assert s.eta_seconds() is None  # finished


def test_reducer_failed():
    s = reduce_fixture("failed")
    assert s.status == "failed" and "epoch 1, step 2" in s.error
    assert (s.best_acc1, s.best_epoch, s.epochs_done) == (45.0, 0, 1)
    assert s.logs[-1].startswith("[error] non-finite loss")
    assert (s.epoch, s.step) == (1, 1)


def test_reducer_nan_values_are_none_not_points():
    s = reduce_fixture("nan")
    assert s.status == "failed"
    assert s.step_losses == ((0.0, 2.0),)  # the NaN step adds no chart point
    assert s.loss is None and s.extra_losses == {"loss_channel": None}
    assert s.epochs[0].train_loss is None and s.epochs[0].eval_loss is None and s.epochs[0].eval_acc1 == 10.0


def test_reducer_noisy_keeps_text_as_logs():
    s = reduce_fixture("noisy")
    assert s.status == "completed" and s.best_acc1 == 70.0
    assert s.logs[0] == "Files already downloaded and verified"
    assert (
        "[1, 2, 3]" in s.logs and "{not json" in s.logs and '{"message": "a dict without a type"}' in s.logs
    )
    assert len(s.logs) == 5  # blank lines are dropped


def test_reducer_ignores_unknown_types_and_versions():
    s = reduce_fixture("unknown_type")
    assert s.status == "completed" and s.best_acc1 == 55.0  # the v2 "epoch" with 99.9 is ignored
    assert s.events_seen == 5 and s.logs == ()


def test_reducer_truncated_is_still_running():
    s = reduce_fixture("truncated")
    assert s.status == "running" and not s.finished
    assert s.epochs_done == 1 and s.best_acc1 == 48.0 and (s.epoch, s.step) == (1, 3)
    assert s.eta_seconds() == pytest.approx(2 * 9.5)


def test_reducer_stopped():
    s = reduce_fixture("stopped")
    assert s.status == "stopped" and s.finished and s.summary["epochs_done"] == 2
    assert (s.best_acc1, s.best_epoch) == (57.0, 1) and s.error is None
    assert s.logs[-1].startswith("[warning] SIGTERM")


@pytest.mark.parametrize("name", ["ok", "failed", "nan", "noisy", "unknown_type", "truncated", "stopped"])
def test_reducer_is_pure_and_incremental_equals_batch(name, tmp_path):
    events = read_events(FIXTURES / f"{name}.jsonl")
    state = RunState()
    snapshot = replace(state)
    for event in events:
        new = apply_event(state, event)
        assert state == snapshot  # the input state was not modified
        state, snapshot = new, replace(new)
    assert state == reduce_events(events)
    # byte-by-byte tailing gives the same state as reading the file at once
    path = tmp_path / "e.jsonl"
    data = (FIXTURES / f"{name}.jsonl").read_bytes()
    tail, tailed = EventTail(path), RunState()
    path.write_bytes(b"")
    for start in range(0, len(data), 37):
        with path.open("ab") as fh:
            fh.write(data[start : start + 37])
        tailed = reduce_events(tail.read_new(), tailed)
    assert tailed == state


def test_step_history_is_decimated_evenly():
    state = RunState(steps_per_epoch=100)
    for i in range(3000):
        state = apply_event(
            state, make_event("step", "r", t=float(i), epoch=i // 100, step=i % 100, loss=1.0)
        )
    xs = [round(x * 100) for x, _ in state.step_losses]
    assert len(xs) <= MAX_STEP_POINTS and state.step_stride == 8 and state.step_seen == 3000
    assert {b - a for a, b in zip(xs, xs[1:], strict=False)} == {8} and xs[0] == 0


def test_log_lines_are_bounded():
    state = reduce_events([TextLine(f"line {i}") for i in range(MAX_LOG_LINES + 50)])
    assert len(state.logs) == MAX_LOG_LINES and state.logs[-1] == f"line {MAX_LOG_LINES + 49}"


def test_epoch_without_best_fields_tracks_best_itself():
    events = [
        make_event("epoch", "r", t=1.0, epoch=e, eval={"acc1": a}) for e, a in enumerate([10.0, 30.0, 20.0])
    ]
    s = reduce_events(events)
    assert (s.best_acc1, s.best_epoch) == (30.0, 1)


def test_run_finished_with_unknown_status_is_failed():
    s = reduce_events([make_event("run_finished", "r", t=1.0, status="exploded", summary={})])
    assert s.status == "failed"
