"""The one reader of a run directory (mdtui/runs/rundir.py): followers of events and output, and the
rule that nothing else in mdtui reads ``events.jsonl`` by itself."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from engine.schema.events import encode, make_event, read_events, reduce_events
from mdtui.runs.rundir import RunEvents, RunOutput, append_event, read_run_state

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "events"

# Names that read or reduce an event stream; only rundir may use them.
EVENT_READERS = {"EventTail", "read_events", "reduce_events", "apply_event"}


def _event_reading_uses(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Constant) and node.value == "events.jsonl":
            names = ["'events.jsonl'"]
        found += [
            f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names if n in EVENT_READERS or n[0] == "'"
        ]
    return found


def test_only_rundir_reads_the_event_stream() -> None:
    offenders = []
    for path in sorted((ROOT / "mdtui").rglob("*.py")):
        if path != ROOT / "mdtui" / "runs" / "rundir.py":
            offenders += _event_reading_uses(path)
    assert not offenders, "read events through mdtui.runs.rundir (RunEvents, read_run_state):\n" + "\n".join(
        offenders
    )


def test_the_scan_sees_a_reader(tmp_path: Path) -> None:
    # the rule above must be able to fail: each way of reading events is caught
    (tmp_path / "x.py").write_text(
        "from engine.schema.events import EventTail\n"
        "import engine.schema.events as ev\n"
        "ev.read_events(p / 'events.jsonl')\n",
        encoding="utf-8",
    )
    uses = {u.split(": ")[1] for u in _event_reading_uses(tmp_path / "x.py", tmp_path)}
    assert uses == {"EventTail", "read_events", "'events.jsonl'"}


def _line(event: dict) -> str:
    return encode(event) + "\n"


def test_run_events_reads_only_what_was_appended_and_waits_for_a_torn_line(tmp_path: Path) -> None:
    follower = RunEvents(tmp_path, "r1")
    assert follower.poll() == [] and follower.state.run_id == "r1"  # no file yet: an empty stream
    started = make_event("run_started", "r1", total_epochs=2, device="cpu")
    epoch = make_event("epoch", "r1", epoch=0, eval={"acc1": 50.0}, seconds=1.0)
    text = _line(started) + _line(epoch)
    path = tmp_path / "events.jsonl"
    path.write_text(text[:-10], encoding="utf-8")  # the epoch line is torn
    assert [e["type"] for e in follower.poll()] == ["run_started"]
    assert follower.state.status == "running" and follower.state.epochs_done == 0
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text[-10:])
    assert [e["type"] for e in follower.poll()] == ["epoch"]
    assert follower.poll() == []
    assert follower.state.epochs_done == 1 and follower.state.best_acc1 == 50.0


def test_run_events_stream_yields_each_event_with_the_state_after_it(tmp_path: Path) -> None:
    lines = [make_event("epoch", "r", epoch=i, eval={"acc1": 10.0 * (i + 1)}) for i in range(3)]
    (tmp_path / "events.jsonl").write_text("".join(_line(e) for e in lines), encoding="utf-8")
    follower = RunEvents(tmp_path)
    seen = [(event["epoch"], follower.state.epochs_done) for event in follower.stream()]
    assert seen == [(0, 1), (1, 2), (2, 3)]


def test_drain_reads_past_a_line_longer_than_one_read(tmp_path: Path) -> None:
    # one poll reads at most 8 MiB: a longer line yields nothing on the first read, which must not
    # end the drain (the run would look as if it had no events after that line)
    huge = make_event("log", "r", level="info", msg="x" * (9 << 20))
    done = make_event("run_finished", "r", status="completed", summary={"best_acc1": 70.0})
    (tmp_path / "events.jsonl").write_text(_line(huge) + _line(done), encoding="utf-8")
    state = read_run_state(tmp_path)
    assert state.status == "completed" and state.best_acc1 == 70.0


def test_read_run_state_agrees_with_the_reducer_on_every_fixture(tmp_path: Path) -> None:
    for fixture in sorted(FIXTURES.glob("*.jsonl")):
        run_dir = tmp_path / fixture.stem
        run_dir.mkdir()
        (run_dir / "events.jsonl").write_bytes(fixture.read_bytes())
        assert read_run_state(run_dir) == reduce_events(read_events(fixture)), fixture.name


def test_append_event_adds_one_whole_line_the_follower_reads(tmp_path: Path) -> None:
    follower = RunEvents(tmp_path)
    append_event(tmp_path, make_event("log", "r", level="warning", msg="queued behind g0"))
    append_event(tmp_path, make_event("log", "r", level="info", msg="launched"))
    assert [e["msg"] for e in follower.poll()] == ["queued behind g0", "launched"]
    assert follower.state.logs == ("[warning] queued behind g0", "[info] launched")


def test_run_output_gives_lines_as_written_and_the_unfinished_one_last(tmp_path: Path) -> None:
    # `mdtui logs --raw` prints JSON exactly as the engine wrote it, not as a parser re-encodes it
    written = '{"v": 1, "type": "log", "run_id": "r", "t": 1.0, "msg": "spaced"}\nplain text\npartial'
    (tmp_path / "stdout.log").write_text(written, encoding="utf-8")
    (tmp_path / "stderr.log").write_text("boom\n", encoding="utf-8")
    out = RunOutput(tmp_path, "stdout")
    assert list(out.new_lines()) == [written.splitlines()[0], "plain text"]
    assert out.rest() == "partial" and list(out.new_lines()) == []
    with (tmp_path / "stdout.log").open("a", encoding="utf-8") as fh:
        fh.write(" line\n")
    assert list(out.new_lines()) == ["partial line"] and out.rest() == ""
    assert list(RunOutput(tmp_path, "stderr").new_lines()) == ["boom"]
    assert json.loads(written.splitlines()[0])["msg"] == "spaced"


def test_run_output_streams_a_log_longer_than_one_read(tmp_path: Path) -> None:
    line = "y" * 1023
    (tmp_path / "stdout.log").write_text((line + "\n") * 9 * 1024, encoding="utf-8")  # 9 MiB
    assert sum(1 for _ in RunOutput(tmp_path).new_lines()) == 9 * 1024
