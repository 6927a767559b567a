"""The dashboard shows what is so: resumed runs, epoch losses, completed-only bests, devices early."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from engine.schema.events import encode, make_event
from mdtui.registry.plan import engine_config
from mdtui.views import dashboard as dashboard_module
from mdtui.views.dashboard import Dashboard


@pytest.fixture(autouse=True)
def no_liveness_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs here are written by hand: no supervisor to check (reconcile would call them lost)."""
    monkeypatch.setattr(dashboard_module, "reconcile", lambda store: None)
    monkeypatch.setenv("MDTUI_FAKE_GPUS", "2")


def _events(run_dir: Path, *events: dict[str, Any]) -> None:
    with (run_dir / "events.jsonl").open("a") as fh:
        fh.write("".join(encode(e) + "\n" for e in events))


def _epochs(run_id: str, epochs: range, total: int) -> list[dict[str, Any]]:
    out = []
    for ep in epochs:
        out.append(make_event("step", run_id, epoch=ep, step=3, loss=0.9604))  # one mini-batch's loss
        out.append(
            make_event(
                "epoch",
                run_id,
                epoch=ep,
                seconds=1.0,
                train={"loss": 0.6465 - ep / 100},
                eval={"acc1": 50.0 + ep},
            )
        )
    return out


def _run(store: Any, plan: Any, name: str, status: str, **fields: Any) -> Any:
    exp = plan.experiments[name]
    rec = store.create_run(
        exp, engine_config(plan, exp, run_id=None, seed=0), seed=0, devices=["0"], status=status
    )
    store.update(rec.run_id, **fields)
    return store.get(rec.run_id)


def test_a_resumed_run_is_followed_through_its_new_attempt(
    tiny_toml: Path, tiny_plan: Any, store: Any
) -> None:
    """Lost at 2/4, resumed from a shell: the open dashboard follows the resume to 4/4, completed."""
    rec = _run(store, tiny_plan, "tiny", "running", started_t=1.0, total_epochs=4)
    run_dir = Path(rec.run_dir)
    _events(run_dir, make_event("run_started", rec.run_id, total_epochs=4), *_epochs(rec.run_id, range(2), 4))
    board = Dashboard(tiny_toml)
    board.refresh()
    store.update(rec.run_id, status="lost", ended_t=5.0, epochs_done=2)  # `kill -9` of the supervisor
    board.refresh()
    assert {r.run_id: r.epoch for r in board.refresh().runs}[rec.run_id] == "2/4"
    store.update(rec.run_id, status="running", started_t=10.0, ended_t=None)  # `mdtui run --resume`
    _events(
        run_dir,
        make_event("run_started", rec.run_id, total_epochs=4),
        *_epochs(rec.run_id, range(2, 4), 4),
        make_event("run_finished", rec.run_id, status="completed", summary={}),
    )
    store.update(rec.run_id, status="completed", ended_t=20.0, epochs_done=4)
    snap = board.refresh()
    row = {r.run_id: r for r in snap.runs}[rec.run_id]
    assert (row.epoch, row.status) == ("4/4", "completed")
    assert board.run_state(rec.run_id).status == "completed"


def test_the_loss_column_is_the_last_epochs_train_loss_for_every_run(
    tiny_toml: Path, tiny_plan: Any, store: Any
) -> None:
    stopped = _run(store, tiny_plan, "tiny", "stopped", started_t=1.0, ended_t=2.0)
    _events(
        Path(stopped.run_dir),
        make_event("run_started", stopped.run_id, total_epochs=5),
        *_epochs(stopped.run_id, range(1), 5),
    )
    newer = _run(store, tiny_plan, "tiny", "completed", started_t=3.0, ended_t=4.0)  # the experiment's latest
    _events(
        Path(newer.run_dir),
        make_event("run_started", newer.run_id, total_epochs=2),
        *_epochs(newer.run_id, range(2), 2),
    )
    rows = {r.run_id: r for r in Dashboard(tiny_toml).refresh().runs}
    assert rows[stopped.run_id].loss == pytest.approx(0.6465)  # not followed: read from the file's tail
    assert rows[newer.run_id].loss == pytest.approx(0.6365)  # followed: the epoch's, not the batch's 0.9604


def test_best_acc1_counts_completed_runs_only(tiny_toml: Path, tiny_plan: Any, store: Any) -> None:
    _run(store, tiny_plan, "tiny", "completed", best_acc1=60.0, started_t=1.0, ended_t=2.0)
    _run(store, tiny_plan, "tiny", "stopped", best_acc1=90.0, started_t=3.0, ended_t=4.0)
    _run(store, tiny_plan, "tiny-focal", "stopped", best_acc1=70.0, started_t=5.0, ended_t=6.0)
    rows = {r.name: r for r in Dashboard(tiny_toml).refresh().experiments}
    assert rows["tiny"].best_acc1 == 60.0
    assert (rows["tiny-focal"].best_acc1, rows["tiny-focal"].partial_best) == (None, 70.0)


def test_devices_show_before_the_first_run(tmp_path: Path) -> None:
    """An empty folder (no runs directory, no experiments.toml): the GPUs are still listed."""
    board = Dashboard(tmp_path / "experiments.toml")
    assert board.store is None
    assert len(board.refresh().devices) == 2


def test_resume_from_the_dashboard_is_the_clis_resume(
    tiny_toml: Path, tiny_plan: Any, store: Any, fake_engine: str, reap: list[int]
) -> None:
    from conftest import wait_for

    rec = _run(store, tiny_plan, "tiny", "lost", started_t=1.0, ended_t=2.0)
    board = Dashboard(tiny_toml)
    assert board.resume(rec.run_id) == (
        None,
        f"run {rec.run_id} has no checkpoints/last.pt to resume from; start a new run instead",
    )
    (Path(rec.run_dir) / "checkpoints").mkdir(exist_ok=True)
    (Path(rec.run_dir) / "checkpoints" / "last.pt").write_bytes(b"x")
    resumed, refused = board.resume(rec.run_id)
    assert refused is None and resumed.status in ("starting", "running")
    reap.append(store.get(rec.run_id).supervisor_pid or 0)
    wait_for(lambda: store.get(rec.run_id).status not in ("starting", "running"))
    if store.get(rec.run_id).status == "completed":  # the fake engine finished: nothing left to resume
        assert "already completed" in (board.resume(rec.run_id)[1] or "")


def test_why_a_start_was_queued_names_the_one_reason(tiny_toml: Path, tiny_plan: Any, store: Any) -> None:
    board = Dashboard(tiny_toml)
    assert board.why_queued("tiny").startswith("no free device now")
    assert board.why_queued("tiny-focal") == (
        "its upstream tiny has no completed run: the queue runs tiny first, then it"
    )
    upstream = _run(store, tiny_plan, "tiny", "running", started_t=1.0)
    assert (
        board.why_queued("tiny-focal")
        == f"it waits for its upstream tiny (running as {upstream.run_id}) to complete"
    )


def test_a_save_under_way_is_not_read_as_the_plan(tiny_toml: Path) -> None:
    """A save in place truncates experiments.toml, then writes it. Read in between (the suite caught
    it under load), the empty file was a plan with no experiments and the table dropped the selection:
    a change is read only once it holds still (two looks, or older than PLAN_SETTLE_SECONDS)."""
    import os

    board = Dashboard(tiny_toml)
    names = set(board.plan.experiments)
    text = tiny_toml.read_text()
    tiny_toml.write_text("")  # the save has truncated the file, and the refresh looks now
    assert board.reload_if_changed() is False and set(board.plan.experiments) == names
    tiny_toml.write_text(text + '\n[experiment.tiny-ls]\ngroup = "demo"\nloss = "ldam"\n')
    assert board.reload_if_changed() is False  # written a moment ago: one more look
    assert board.reload_if_changed() is True and set(board.plan.experiments) == names | {"tiny-ls"}
    tiny_toml.write_text("")  # emptied for good: read at the second look, or once it is old enough
    assert board.reload_if_changed() is False
    old = time.time() - dashboard_module.PLAN_SETTLE_SECONDS - 1
    os.utime(tiny_toml, (old, old))
    assert board.reload_if_changed() is True and board.plan.experiments == {}
    tiny_toml.unlink()  # a file that is gone is read (and reported) at once
    assert board.reload_if_changed() is True and board.plan_missing
