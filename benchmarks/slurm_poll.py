"""What one Slurm status poll costs with many jobs: submit N held jobs, time `job_states` on them.

    bash tests/slurm/cluster.sh up && export SLURM_CONF=/tmp/mdtui-slurm/etc/slurm.conf
    python benchmarks/slurm_poll.py [--jobs 1000] [--repeats 7]

The jobs are submitted held (`sbatch --hold`), so they never run; they are cancelled at the end.
Prints JSON: the median/min/max seconds of one batched poll (ONE squeue call for all ids, parsed) at
1, 10, 100 and N jobs, and for comparison what polling each job with its own call would cost (timed
on a sample of 20, scaled to N).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdtui.system import slurm  # noqa: E402


def submit_held(n: int) -> list[str]:
    def one(i: int) -> str:
        return slurm.run(
            [
                "sbatch",
                "--parsable",
                "--hold",
                f"--job-name=poll-bench-{i}",
                "--output=/dev/null",
                "--wrap=true",
            ]
        ).strip()

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(n)))


def timed(fn, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    t0 = time.perf_counter()
    ids = submit_held(args.jobs)
    submit_s = time.perf_counter() - t0
    try:
        states = slurm.job_states(ids)
        assert len(states) == len(ids) and all(s.state == "PENDING" for s in states.values()), "jobs missing"
        polls = {}
        for n in sorted({1, 10, 100, args.jobs}):
            if n <= len(ids):
                polls[str(n)] = timed(lambda n=n: slurm.job_states(ids[:n]), args.repeats)
        sample = ids[:20]
        one_each = timed(lambda: [slurm.job_states([j]) for j in sample], max(1, args.repeats // 3))
        per_job_s = one_each["median_s"] / len(sample)
    finally:
        for start in range(0, len(ids), 200):
            slurm.run(["scancel", *ids[start : start + 200]])
    result = {
        "benchmark": "slurm_poll",
        "jobs": len(ids),
        "submit_s": round(submit_s, 2),
        "poll_s": {n: {k: round(v, 4) for k, v in t.items()} for n, t in polls.items()},
        "one_call_per_job_estimate_s": round(per_job_s * len(ids), 2),
        "slurm_version": slurm.run(["sinfo", "--version"]).strip(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
