"""Concurrent launches never put two runs on one device (issue 11: the ledger used to double-book).

Six launches race from separate processes released together by a barrier file: four
`mdtui run tiny --detach` and a scheduler with two queued runs, on 1 and on 2 fake GPUs with the fake
engine. The proof comes from the engines themselves: each run's `run_started` event carries the
CUDA_VISIBLE_DEVICES its engine saw and its time, `run_finished` its end; on every device those
intervals must not overlap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_ENGINE, TINY_TOML, wait_for

from mdtui.registry.plan import load_plan
from mdtui.runs.status import LIVE
from mdtui.runs.store import RunStore
from mdtui.scheduling import scheduler

# Imports happen before the barrier, so only the launches themselves race.
WAITER = """
import os, sys, time
{imports}
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
{call}
"""
CLI = WAITER.format(imports="from mdtui.cli import main", call="sys.argv = ['mdtui', *sys.argv[3:]]\nmain()")
SCHEDULER = WAITER.format(
    imports="from mdtui.scheduling.scheduler import main", call="sys.exit(main(sys.argv[3:]))"
)
CLI_LAUNCHES = 4
QUEUED = 2


def _env(tmp_path: Path, gpus: int) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MDTUI_")}
    env.update(
        MDTUI_FAKE_GPUS=str(gpus),
        MDTUI_ENGINE_CMD=f"{sys.executable} {FAKE_ENGINE}",
        FAKE_EPOCH_SECONDS="0.15",
        MDTUI_SCHEDULER_POLL="0.1",
    )
    return env


def _intervals(store: RunStore) -> dict[str, list[tuple[float, float, str]]]:
    """Per device the engines' own (run_started t, run_finished t, run id), from events.jsonl."""
    by_device: dict[str, list[tuple[float, float, str]]] = {}
    for rec in store.list_runs():
        events = [json.loads(line) for line in (rec.run_dir / "events.jsonl").read_text().splitlines()]
        started = next(e for e in events if e["type"] == "run_started")
        finished = next(e for e in events if e["type"] == "run_finished")
        seen = started["world"]["CUDA_VISIBLE_DEVICES"]
        uuids = ",".join(f"GPU-fake-{int(d):04d}" for d in rec.devices)  # handed out by UUID
        assert seen == uuids, (rec.run_id, seen, rec.devices)
        for device in seen.split(","):
            by_device.setdefault(device, []).append((started["t"], finished["t"], rec.run_id))
    return by_device


@pytest.mark.slow
@pytest.mark.parametrize("gpus", [1, 2])
def test_six_racing_launches_never_share_a_device(tmp_path: Path, gpus: int) -> None:
    toml = tmp_path / "experiments.toml"
    toml.write_text(TINY_TOML, encoding="utf-8")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    env = _env(tmp_path, gpus)
    queued = [scheduler.enqueue(store, plan, ["tiny"])[0] for _ in range(QUEUED)]  # no scheduler yet

    go = tmp_path / "go"
    procs = []
    for i in range(CLI_LAUNCHES + 1):
        ready = tmp_path / f"ready-{i}"
        if i < CLI_LAUNCHES:
            args = [
                sys.executable,
                "-c",
                CLI,
                str(ready),
                str(go),
                "-f",
                str(toml),
                "run",
                "tiny",
                "--detach",
            ]
        else:
            args = [sys.executable, "-c", SCHEDULER, str(ready), str(go), str(store.runs_dir), str(toml)]
        procs.append(
            (ready, subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        )
    wait_for(lambda: all(ready.exists() for ready, _ in procs), timeout=60)
    go.touch()
    outputs = [(p.wait(timeout=120), p.stdout.read().decode()) for _, p in procs[:CLI_LAUNCHES]]

    started = [out for code, out in outputs if code == 0]
    refused = [out for code, out in outputs if code != 0]
    assert all("no free device" in out and "Traceback" not in out for out in refused), refused
    assert len(started) <= gpus  # runs_per_device = 1: one run per device at a time

    # the queued runs all complete, one after another where they must share a device
    wait_for(lambda: all(store.get(r.run_id).status == "completed" for r in queued), timeout=120)
    wait_for(lambda: not store.list_runs(statuses=list(LIVE)), timeout=60)
    assert procs[-1][1].wait(timeout=60) == 0
    runs = store.list_runs()
    assert len(runs) == QUEUED + len(started)
    assert all(r.status == "completed" for r in runs), [(r.run_id, r.status, r.error) for r in runs]

    intervals = _intervals(store)
    assert set(intervals) <= {f"GPU-fake-{i:04d}" for i in range(gpus)}
    for device, spans in intervals.items():
        spans.sort()
        for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
            assert end <= start, f"runs {first} and {second} overlapped on device {device}"
