"""Runs that never started end alike, whoever ended them: exit.json, the index, no RESULTS.md line.

A launch that failed, a job sbatch refused and a run cancelled while it waited (in mdtui's queue or
in Slurm's, by mdtui or by anyone) produced no result: `mdtui status` shows them with the reason,
and RESULTS.md's "Incomplete runs" keeps only runs that can be resumed or compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdtui.execution import ending, supervise
from mdtui.execution.launcher import LocalLauncher
from mdtui.execution.launching import LaunchError, SubmitError
from mdtui.execution.reconcile import reconcile
from mdtui.execution.slurm import SlurmLauncher
from mdtui.runs.rundir import EXIT_FILE
from mdtui.runs.status import RunStatus
from mdtui.scheduling import scheduler
from mdtui.system import slurm as slurm_cli


def _no_results_line(plan, run_id: str) -> bool:
    log = plan.settings.results_log
    return not log.exists() or run_id not in log.read_text(encoding="utf-8")


def _exit(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / EXIT_FILE).read_text(encoding="utf-8"))


def _queued(plan, store):
    return store.create_run(plan.experiments["tiny"], {"epochs": 1}, seed=0, devices=[], status="queued")


def test_a_run_cancelled_from_the_queue_ends_with_exit_json_and_no_results_line(tiny_plan, store) -> None:
    rec = scheduler.enqueue(store, tiny_plan, ["tiny"])[0]
    assert scheduler.cancel(store, rec.run_id) == "cancelled"
    final = store.get(rec.run_id)
    assert (final.status, final.error) == ("cancelled", "cancelled from the queue")
    assert _exit(final.run_dir)["never_started"] is True
    assert _no_results_line(tiny_plan, rec.run_id)
    assert reconcile(store) == [] and store.get(rec.run_id).status == "cancelled"  # converged, stays


def test_a_launch_that_fails_ends_the_run_failed_once(tiny_plan, store, monkeypatch) -> None:
    rec = _queued(tiny_plan, store)

    def cannot_start(*_args, **_kwargs):
        raise OSError("no such interpreter")

    monkeypatch.setattr(supervise, "launch", cannot_start)
    with pytest.raises(LaunchError, match="launch failed"):
        LocalLauncher.for_plan(store, tiny_plan).submit(rec.run_id, ["cpu"])
    final = store.get(rec.run_id)
    assert final.status == "failed" and "no such interpreter" in final.error
    assert _exit(final.run_dir)["never_started"] is True
    assert _no_results_line(tiny_plan, rec.run_id)


def test_a_job_sbatch_refuses_ends_the_run_failed_with_slurm_s_words(tiny_plan, store, monkeypatch) -> None:
    rec = _queued(tiny_plan, store)

    def refused(*_args, **_kwargs):
        raise slurm_cli.SlurmError("sbatch: error: invalid partition specified: gpux")

    monkeypatch.setattr(slurm_cli, "sbatch", refused)
    with pytest.raises(SubmitError, match="invalid partition"):
        SlurmLauncher.for_plan(store, tiny_plan).submit(rec.run_id, [])
    final = store.get(rec.run_id)
    assert final.status == "failed" and "invalid partition" in final.error
    assert _exit(final.run_dir)["never_started"] is True
    assert _no_results_line(tiny_plan, rec.run_id)


@pytest.mark.parametrize("asked_by_mdtui", [True, False])
def test_a_pending_job_cancelled_by_anyone_is_cancelled(asked_by_mdtui: bool) -> None:
    said = ending.SlurmEnd(job_id="12", state="CANCELLED", started=False)
    end = ending.EngineEnd(
        stop_requested=asked_by_mdtui, supervisor_vanished=True, never_started=True, slurm=said
    )
    decided = ending.decide(end)
    assert decided.status == RunStatus.CANCELLED


def test_converge_of_a_never_started_ending_writes_no_results_line(tiny_plan, store) -> None:
    rec = _queued(tiny_plan, store)
    store.update(rec.run_id, status="starting")
    # the ender wrote exit.json and died before the index row: the next look converges it
    info = {"run_id": rec.run_id, "status": "failed", "error": "launch failed: x", "never_started": True}
    (Path(rec.run_dir) / EXIT_FILE).write_text(json.dumps(info), encoding="utf-8")
    final = ending.converge(store, store.get(rec.run_id))
    assert final.status == "failed"
    assert _no_results_line(tiny_plan, rec.run_id)
