"""How the TUI holds up under load: 64 live runs, each appending 20 events per second.

    python benchmarks/tui_bench.py [--runs 64] [--rate 20] [--seconds 20] [--presses 30]

A writer process appends step events (and an epoch event every second) to each run's events.jsonl
and updates the index rows every 2 s, as supervisors do. The real app runs in a tmux terminal
(100x30, fake GPUs) on the Runs tab. Measured:

* CPU of the app process (psutil) over ``--seconds`` seconds, as a percentage of one core;
* key-press to screen-update latency: ``j``/``k`` sent with tmux, then the pane is read every few
  milliseconds until the highlighted row has moved (so it includes tmux's own capture time, a few ms).

* start-up: a fresh ``python`` process opens the app (in-process Pilot, 100x30) over the shipped
  experiments.toml (141 experiments) and fake GPUs; the time from launching the process to the
  Experiments table holding its rows, best and median of ``--startups`` launches.

Prints one JSON object. Targets (issue 6): latency < 100 ms, CPU < 20 % of one core; (issue 12)
first rows < 1 s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOML = """\
[settings]
runs_dir = "runs"
results_log = "RESULTS.md"

[defaults]
epochs = 1000
model = "resnet32"
data = { name = "synthetic", num_classes = 3 }

[experiment.bench]
group = "bench"
loss = "ce"
"""


def make_runs(root: Path, count: int) -> list[tuple[str, Path]]:
    """``count`` runs marked running, "supervised" by this (alive) process so nobody calls them lost."""
    from mdtui.registry.plan import engine_config, load_plan
    from mdtui.runs.store import RunStore
    from mdtui.system.processes import boot_id, process_start_time

    (root / "experiments.toml").write_text(TOML)
    plan = load_plan(root / "experiments.toml")
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    exp = plan.experiments["bench"]
    me, start, boot = os.getpid(), process_start_time(os.getpid()), boot_id()
    runs = []
    for i in range(count):
        run_id = f"20250101-{i // 60:02d}{i % 60:02d}00-{i:04x}"
        rec = store.create_run(
            exp,
            engine_config(plan, exp, run_id=run_id, seed=i),
            seed=i,
            devices=[str(i % 8)],
            status="running",
            run_id=run_id,
        )
        store.update(
            run_id,
            supervisor_pid=me,
            supervisor_start=start,
            boot_id=boot,
            started_t=time.time(),
            total_epochs=1000,
        )
        runs.append((run_id, Path(rec.run_dir)))
    return runs


def write_events(runs: list[tuple[str, Path]], rate: float, stop: mp.Event) -> None:  # type: ignore[valid-type]
    """The fake engines: ``rate`` events per second per run, an epoch event each ``rate`` steps."""
    from engine.schema.events import encode, make_event
    from mdtui.runs.store import RunStore

    store = RunStore(runs[0][1].parents[1])
    files = {run_id: open(run_dir / "events.jsonl", "a", encoding="utf-8") for run_id, run_dir in runs}  # noqa: SIM115
    for run_id, fh in files.items():
        fh.write(
            encode(make_event("run_started", run_id, total_epochs=1000, steps_per_epoch=int(rate))) + "\n"
        )
        fh.flush()
    step, last_index = 0, time.monotonic()
    period = 1.0 / rate
    next_t = time.monotonic()
    while not stop.is_set():  # type: ignore[attr-defined]
        epoch, in_epoch = divmod(step, int(rate))
        for run_id, fh in files.items():
            fh.write(
                encode(
                    make_event("step", run_id, epoch=epoch, step=in_epoch, loss=2.0 / (1 + step / 50), lr=0.1)
                )
                + "\n"
            )
            if in_epoch == int(rate) - 1:
                acc = min(99.0, 10 + epoch)
                fh.write(
                    encode(
                        make_event(
                            "epoch",
                            run_id,
                            epoch=epoch,
                            lr=0.1,
                            seconds=1.0,
                            train={"loss": 1.0, "acc1": acc},
                            eval={"loss": 1.1, "acc1": acc},
                            best_acc1=acc,
                            best_epoch=epoch,
                        )
                    )
                    + "\n"
                )
            fh.flush()
        step += 1
        if time.monotonic() - last_index >= 2.0:  # supervisors mirror progress into the index
            for run_id, _ in runs:
                store.update(run_id, epochs_done=epoch)
            last_index = time.monotonic()
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))


class Pane:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True).stdout

    def styled(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-e", "-t", "b").splitlines()


BG = re.compile(r"\x1b\[[0-9;]*48;5;(\d+)m")


def cursor_line(lines: list[str], first: int, last: int) -> int | None:
    """The table row drawn in a background colour no other row has: the cursor."""
    colours = {}
    for i in range(first, min(last, len(lines))):
        match = BG.search(lines[i])
        if match:
            colours.setdefault(match.group(1), []).append(i)
    single = [rows[0] for rows in colours.values() if len(rows) == 1]
    return single[0] if len(single) == 1 else None


def app_process(pane: Pane):  # noqa: ANN201
    import psutil

    shell = psutil.Process(int(pane.tmux("list-panes", "-t", "b", "-F", "#{pane_pid}").strip()))
    for _ in range(100):
        for child in shell.children(recursive=True):
            if "mdtui" in " ".join(child.cmdline()):
                return child
        time.sleep(0.1)
    raise RuntimeError("the app did not start")


STARTUP_CHILD = """
import asyncio, os, sys, time
from pathlib import Path
from mdtui.tui.app import MdtuiApp
from mdtui.tui.widgets.experiment_table import ExperimentTable

async def main():
    app = MdtuiApp(Path(sys.argv[1]))
    async with app.run_test(size=(100, 30)) as pilot:
        while True:
            tables = app.screen.query(ExperimentTable)
            if tables and tables.first().row_count:
                print(time.time(), flush=True)
                return
            await asyncio.sleep(0.002)

asyncio.run(main())
"""


def startup_seconds(launches: int) -> list[float]:
    """Seconds from starting a process to the Experiments table holding rows, per launch."""
    root = Path(tempfile.mkdtemp(prefix="mdtui-startup-"))
    shutil.copy(REPO / "experiments.toml", root / "experiments.toml")
    env = {**os.environ, "MDTUI_FAKE_GPUS": "2", "PYTHONPATH": str(REPO)}
    times = []
    try:
        for _ in range(launches):
            start = time.time()
            out = subprocess.run(
                [sys.executable, "-c", STARTUP_CHILD, str(root / "experiments.toml")],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            times.append(float(out.stdout.split()[-1]) - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument("--startups", type=int, default=5, help="launches timed for the start-up figure")
    parser.add_argument("--startup-only", action="store_true", help="measure the start-up only")
    args = parser.parse_args()
    startups = sorted(startup_seconds(args.startups)) if args.startups else []
    startup = {
        "startup_s_best": round(startups[0], 3) if startups else None,
        "startup_s_median": round(statistics.median(startups), 3) if startups else None,
    }
    if args.startup_only:
        print(json.dumps({**startup, "launches": len(startups), "targets": {"startup_s": 1.0}}, indent=2))
        return 0
    if shutil.which("tmux") is None:
        print(json.dumps({"error": "tmux is needed"}))
        return 1

    root = Path(tempfile.mkdtemp(prefix="mdtui-bench-"))
    runs = make_runs(root, args.runs)
    stop = mp.Event()
    writer = mp.Process(target=write_events, args=(runs, args.rate, stop), daemon=True)
    writer.start()
    pane = Pane(f"mdtui-bench-{os.getpid()}")
    env = f"MDTUI_FAKE_GPUS=8 PYTHONPATH={shlex.quote(str(REPO))}"
    pane.tmux(
        "new-session",
        "-d",
        "-s",
        "b",
        "-x",
        "100",
        "-y",
        "30",
        f"cd {shlex.quote(str(root))} && {env} {shlex.quote(sys.executable)} -m mdtui; sleep 30",
    )
    try:
        proc = app_process(pane)
        deadline = time.monotonic() + 30
        while "bench" not in "\n".join(pane.styled()) and time.monotonic() < deadline:
            time.sleep(0.2)
        pane.tmux("send-keys", "-t", "b", "2")  # the Runs tab: 64 live rows
        time.sleep(3.0)  # let the first refreshes settle

        cpu0, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(args.seconds)
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        cpu = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (t1 - t0) * 100

        latencies = []
        first_row, last_row = 4, 25
        for i in range(args.presses):
            before = cursor_line(pane.styled(), first_row, last_row)
            key = "j" if i % 2 == 0 else "k"
            start = time.perf_counter()
            pane.tmux("send-keys", "-t", "b", key)
            while time.perf_counter() - start < 2.0:
                now = cursor_line(pane.styled(), first_row, last_row)
                if now is not None and now != before:
                    latencies.append((time.perf_counter() - start) * 1000)
                    break
            time.sleep(0.15)
        latencies.sort()
        result = {
            "runs": args.runs,
            "events_per_second_per_run": args.rate,
            "cpu_percent_of_one_core": round(cpu, 1),
            "cpu_seconds_measured": round(t1 - t0, 1),
            "key_latency_ms_median": round(statistics.median(latencies), 1) if latencies else None,
            "key_latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1)
            if latencies
            else None,
            "key_latency_ms_max": round(latencies[-1], 1) if latencies else None,
            "key_presses_measured": len(latencies),
            **startup,
            "targets": {"latency_ms": 100, "cpu_percent": 20, "startup_s": 1.0},
        }
        print(json.dumps(result, indent=2))
    finally:
        pane.tmux("kill-server")
        stop.set()
        writer.join(5)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
