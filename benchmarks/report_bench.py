"""Time ``mdtui report`` on a store of 10,000 completed runs (the budget is 2 s; docs/development.md#speed-rules).

    python benchmarks/report_bench.py [--runs 10000] [--groups 10] [--repeat 3]

Builds, in a temporary directory, an experiments.toml with ``groups`` groups (a baseline plus a
7 x 7 sweep of loss.threshold x optim.lr each) and an index with ``runs`` completed runs spread over
those experiments as seeds, then times ``render_report`` for markdown (all groups), json and a pivot.
Prints one JSON object. Rows go straight into the index (no run directories): the report reads
only the index, and writing 10,000 directories would time the disk, not the report.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLDS = (0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
LRS = (0.1, 0.01, 0.001, 1e-4, 1e-5, 1e-6, 5e-4)


def plan_text(groups: int) -> str:
    parts = ['[settings]\nruns_dir = "runs"\n\n[defaults]\nepochs = 200\nmodel = "resnet32"\n']
    parts.append('data = { name = "synthetic", num_classes = 10, imbalance_ratio = 100 }\n')
    for g in range(groups):
        parts.append(f'\n[experiment.g{g}-ce]\ngroup = "group {g}"\nbaseline = true\nloss = "ce"\n')
        parts.append(
            f'\n[experiment.g{g}-refl]\ngroup = "group {g}"\nloss = {{ name = "refl", threshold = 0.5 }}\n'
            f'sweep = {{ "loss.threshold" = {list(THRESHOLDS)}, "optim.lr" = {list(LRS)} }}\n'
        )
    return "".join(parts)


def build_store(root: Path, runs: int, groups: int, seed: int = 0):
    """A plan and a RunStore whose index holds ``runs`` completed runs; returns (plan, store)."""
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunRecord, RunStore

    (root / "experiments.toml").write_text(plan_text(groups), encoding="utf-8")
    plan = load_plan(root / "experiments.toml")
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    rng = random.Random(seed)
    experiments = list(plan.experiments.values())
    records = []
    for i in range(runs):
        exp = experiments[i % len(experiments)]
        acc1 = rng.uniform(60, 80)
        records.append(
            RunRecord(
                run_id=f"20240101-{i // 60:06d}-{i % 65536:04x}",
                experiment=exp.name,
                group=exp.group,
                run_dir=store.runs_dir / exp.name / str(i),
                status="completed" if i % 50 else "failed",
                created_t=1_700_000_000.0 + i,
                seed=i // len(experiments),
                sweep=dict(exp.sweep_point),
                total_epochs=200,
                epochs_done=200,
                best_acc1=acc1,
                best_epoch=rng.randrange(200),
                last_acc1=acc1 - rng.uniform(0, 1),
                acc5=min(100.0, acc1 + 20),
                err1=100.0 - acc1,
                many=acc1 + 15,
                medium=acc1,
                few=acc1 - 20,
                note="checked" if i % 97 == 0 else "",
            )
        )
    store.put_records(records)  # the index only, in one transaction
    return plan, store


def time_report(plan, store, repeat: int) -> dict[str, float]:
    from mdtui.results.report import render_report

    cases = {
        "md_all_groups": {},
        "json_all_groups": {"fmt": "json"},
        "pivot_one_group": {"pivot": ("loss.threshold", "optim.lr"), "selectors": ["group 0"]},
    }
    out: dict[str, float] = {}
    for name, kwargs in cases.items():
        selectors = kwargs.pop("selectors", [])
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            render_report(store, plan, selectors, **kwargs)
            best = min(best, time.perf_counter() - start)
        out[name] = round(best, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        plan, store = build_store(Path(tmp), args.runs, args.groups)
        built = time.perf_counter() - start
        seconds = time_report(plan, store, args.repeat)
    result = {
        "runs": args.runs,
        "experiments": len(plan.experiments),
        "groups": args.groups,
        "build_seconds": round(built, 2),
        "report_seconds": seconds,
        "budget_seconds": 2.0,
        "ok": max(seconds.values()) < 2.0,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
