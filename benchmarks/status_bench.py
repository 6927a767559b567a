"""Time ``mdtui status``, ``mdtui status --all`` and ``mdtui list`` on a lab-sized index (budget: 1 s each).

    python benchmarks/status_bench.py [--runs 10000] [--groups 10] [--repeat 3] [--tty]

Builds the store of ``report_bench.py`` (``groups`` groups of 50 experiments, ``runs`` finished runs
in the index, no run directories) and times each command as a user runs it: a fresh ``python -m
mdtui`` process, output to a pipe (``--tty``: also to a pseudo-terminal, where the table is fitted to
80 columns), wall clock from start to exit and the process's CPU time, best of ``repeat``. Prints
one JSON object; ``ok`` when every figure is under the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_bench import build_store  # noqa: E402

COMMANDS = {
    "status": ["status"],
    "status_all": ["status", "--all"],
    "list": ["list"],
}
BUDGET_SECONDS = 1.0


def _drain(fd: int) -> None:
    # a pseudo-terminal's buffer is small: read it while the command writes, or the command blocks
    try:
        while os.read(fd, 1 << 16):
            pass
    except OSError:  # the other side closed
        pass


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(root: Path, args: list[str], *, tty: bool) -> tuple[float, float, int]:
    """Wall and CPU seconds of one ``mdtui -f experiments.toml ARGS``, and the lines it printed
    (pipe only). CPU time is what to compare on a busy machine: the wall clock waits for the cores."""
    cmd = [sys.executable, "-m", "mdtui", "-f", str(root / "experiments.toml"), *args]
    env = {**os.environ, "COLUMNS": "80"}
    cpu = _child_cpu()
    if not tty:
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, check=True).stdout
        return time.perf_counter() - start, _child_cpu() - cpu, out.count(b"\n")
    leader, follower = pty.openpty()
    reader = threading.Thread(target=_drain, args=(leader,), daemon=True)
    reader.start()
    start = time.perf_counter()
    subprocess.run(cmd, cwd=root, env=env, stdout=follower, stderr=subprocess.DEVNULL, check=True)
    seconds = time.perf_counter() - start
    os.close(follower)
    reader.join(timeout=5)
    os.close(leader)
    return seconds, _child_cpu() - cpu, -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tty", action="store_true", help="also time output to a pseudo-terminal")
    args = parser.parse_args(argv)
    result: dict[str, object] = {"runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan, _store = build_store(root, args.runs, args.groups)
        result["experiments"] = len(plan.experiments)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import mdtui.cli"], check=True)
        result["import_seconds"] = round(time.perf_counter() - start, 3)
        modes = [("pipe", False)] + ([("tty", True)] if args.tty else [])
        for name, command in COMMANDS.items():
            for mode, tty in modes:
                timings = [time_command(root, command, tty=tty) for _ in range(args.repeat)]
                result[f"{name}_{mode}_seconds"] = round(min(t[0] for t in timings), 3)
                result[f"{name}_{mode}_cpu_seconds"] = round(min(t[1] for t in timings), 3)
                if not tty:
                    result[f"{name}_lines"] = timings[0][2]
    seconds = [v for k, v in result.items() if k.endswith("_seconds") and k != "import_seconds"]
    result["budget_seconds"] = BUDGET_SECONDS
    result["ok"] = max(seconds) < BUDGET_SECONDS  # type: ignore[type-var]
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
