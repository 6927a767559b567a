"""RunMonitor (mdtui/views/monitor.py): incremental reads, and safety across the TUI's two threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from engine.schema.events import encode, make_event
from mdtui.views.monitor import RunMonitor


def _run_dir(root: Path, run_id: str, epochs: int) -> Path:
    run_dir = root / run_id
    run_dir.mkdir()
    lines = [encode(make_event("run_started", run_id, total_epochs=epochs, steps_per_epoch=1))]
    lines += [
        encode(make_event("epoch", run_id, epoch=e, train={"loss": 1.0}, eval={"acc1": 10.0}))
        for e in range(epochs)
    ]
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def test_follows_appended_events_only() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = _run_dir(Path(tmp), "r1", 2)
        monitor = RunMonitor()
        monitor.follow("r1", run_dir)
        assert monitor.poll() == {"r1"}
        assert monitor.state("r1").epochs_done == 2
        assert monitor.poll() == set()  # nothing new: nothing re-read
        with (run_dir / "events.jsonl").open("a") as f:
            f.write(
                encode(make_event("epoch", "r1", epoch=2, train={"loss": 0.5}, eval={"acc1": 20.0})) + "\n"
            )
        assert monitor.poll() == {"r1"} and monitor.state("r1").epochs_done == 3


def test_the_ui_thread_may_follow_while_the_refresh_worker_polls(tmp_path: Path) -> None:
    """The TUI's refresh worker polls every run while a run detail, on the UI thread, follows one
    more: unguarded, the worker's loop over the runs saw the dict change size and the screen died."""
    dirs = [_run_dir(tmp_path, f"r{i}", 3) for i in range(200)]
    monitor = RunMonitor()
    for d in dirs[:100]:
        monitor.follow(d.name, d)
    errors: list[BaseException] = []
    stop = time.monotonic() + 1.5

    def worker() -> None:
        try:
            while time.monotonic() < stop:
                monitor.poll()
                monitor.states()
        except BaseException as exc:  # noqa: BLE001 (the failure under test)
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        while time.monotonic() < stop and not errors:
            for d in dirs[100:]:
                monitor.follow(d.name, d)
                monitor.state(d.name)
            monitor.forget([d.name for d in dirs[:100]])
    finally:
        thread.join()
    assert errors == []


def _append(run_dir: Path, *events: dict) -> None:
    with (run_dir / "events.jsonl").open("a") as f:
        f.write("".join(encode(e) + "\n" for e in events))


def test_a_finished_run_that_is_resumed_is_followed_again(tmp_path: Path) -> None:
    """A lost run drained at 2/4 and then resumed (CLI, scheduler or a Slurm requeue: the new attempt
    appends a run_started to the same file) must show the resume, not stay frozen at 2/4."""
    run_dir = _run_dir(tmp_path, "r1", 2)
    monitor = RunMonitor()
    monitor.follow("r1", run_dir)
    monitor.poll(finished=["r1"])  # the index says lost: drained
    assert monitor.state("r1").epochs_done == 2
    assert monitor.poll(finished=["r1"]) == set()  # nothing new: not read again
    _append(
        run_dir,
        make_event("run_started", "r1", total_epochs=4, steps_per_epoch=1),
        *(make_event("epoch", "r1", epoch=e, train={"loss": 0.5}, eval={"acc1": 30.0}) for e in (2, 3)),
        make_event("run_finished", "r1", status="completed", summary={}),
    )
    assert monitor.poll() == {"r1"}  # the index says running again, or not yet: either way it is read
    state = monitor.state("r1")
    assert (state.epochs_done, state.total_epochs, state.status) == (4, 4, "completed")


def test_a_rewritten_events_file_is_read_from_its_start(tmp_path: Path) -> None:
    """A restart that replaces events.jsonl (a new file under the same name) is a new stream."""
    run_dir = _run_dir(tmp_path, "r1", 3)
    monitor = RunMonitor()
    monitor.follow("r1", run_dir)
    monitor.poll(finished=["r1"])
    assert monitor.state("r1").epochs_done == 3
    fresh = run_dir / "events.new"
    fresh.write_text(encode(make_event("run_started", "r1", total_epochs=5, steps_per_epoch=1)) + "\n")
    fresh.replace(run_dir / "events.jsonl")
    assert monitor.poll(finished=["r1"]) == {"r1"}
    state = monitor.state("r1")
    assert (state.epochs_done, state.total_epochs) == (0, 5)
