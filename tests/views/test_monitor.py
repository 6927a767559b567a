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
