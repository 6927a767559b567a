"""Time ``mdtui list`` over 500 experiments with 10,000 runs in the index (the budget is 1 s).

    python benchmarks/list_bench.py [--runs 10000] [--groups 10] [--repeat 5]

Builds the same project as ``report_bench.py`` (``groups`` groups of a baseline plus a 7 x 7 sweep:
500 experiments for 10 groups, and ``runs`` completed runs in the index), then times the real
command in a fresh process -- start-up and imports included, as a user waits for it -- for the
table and for ``--json``, best of ``repeat``. It also times the data side in-process (reading and
validating experiments.toml; the latest run of every experiment) to show where the time goes.
Prints one JSON object; exits 1 when a command takes 1 s or more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_bench import build_store  # noqa: E402

BUDGET_SECONDS = 1.0


def best_of(repeat: int, action) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def time_command(root: Path, args: list[str], repeat: int) -> float:
    env = {**os.environ, "MDTUI_EXPERIMENTS": str(root / "experiments.toml"), "COLUMNS": "200"}

    def once() -> None:
        subprocess.run(
            [sys.executable, "-m", "mdtui", *args],
            cwd=root,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    return best_of(repeat, once)


def time_data_side(root: Path, repeat: int) -> dict[str, float]:
    import mdtui.registry.plan as plan_module
    from mdtui.runs.store import RunStore

    def load() -> None:
        plan_module._last = None  # a fresh process parses once: measure that parse
        plan_module.load_plan(root / "experiments.toml")

    plan = plan_module.load_plan(root / "experiments.toml")
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    return {
        "load_plan": best_of(repeat, load),
        "latest_runs": best_of(repeat, store.latest_runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan, _store = build_store(root, args.runs, args.groups)
        seconds = {
            "list": time_command(root, ["list"], args.repeat),
            "list_json": time_command(root, ["list", "--json"], args.repeat),
            "validate": time_command(root, ["validate"], args.repeat),
        }
        data_side = time_data_side(root, args.repeat)
    result = {
        "experiments": len(plan.experiments),
        "runs": args.runs,
        "command_seconds": seconds,
        "in_process_seconds": data_side,
        "budget_seconds": BUDGET_SECONDS,
        "ok": max(seconds["list"], seconds["list_json"]) < BUDGET_SECONDS,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
