"""Honest deltas end to end: real supervisors run seeds, write RESULTS.md, and the report reads them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mdtui.cli import app

TOML = """\
[settings]
runs_dir = "runs"
results_log = "RESULTS.md"

[defaults]
epochs = 3
batch_size = 16
model = "resnet32"
data = { name = "synthetic", num_classes = 3, samples_per_class = 8, test_per_class = 4, image_size = 8, imbalance_ratio = 4 }
schedule = { name = "cosine" }
seeds = [0, 1]

[experiment.base]
group = "g"
baseline = true
loss = "ce"
paper = { acc1 = 71.0, source = "a paper" }

[experiment.longer]
group = "g"
epochs = 4
loss = "ce"
paper = { acc1 = 80.5, source = "another paper" }
"""


@pytest.mark.slow
def test_seeds_run_by_supervisors_give_intervals_in_the_log_and_the_report(
    tmp_path, fake_engine, monkeypatch
):
    # The fake engine reaches 50 + 10 * (epochs - 1) + 0.5 * seed: base 70, 70.5; longer 80, 80.5.
    monkeypatch.setenv("FAKE_SEED_SPREAD", "0.5")
    toml = tmp_path / "experiments.toml"
    toml.write_text(TOML, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["-f", str(toml), "run", "base", "longer", "--device", "cpu"])
    assert result.exit_code == 0, result.output

    log = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    entries = [line for line in log.splitlines() if line.startswith("- `longer`")]
    assert len(entries) == 2
    # each entry is written as its run ends, before the index says it completed: the first seed of
    # `longer` (80) against both of base (mean 70.25) has no spread of its own yet
    assert "acc1 is 80.00% (paper 80.5)" in entries[0] and "Δ acc1 +9.8 (1 seed)" in entries[0]
    # the second: 80.25 - 70.25 = 10; sd 0.35355 each, n 2: se 0.35355, Welch df 2, t 4.3027 -> 1.52
    assert "Δ acc1 +10.00 ± 1.52 (2 vs 2 seeds)" in entries[1]
    assert "within noise" not in log

    report = runner.invoke(app, ["-f", str(toml), "report", "g", "--format", "md"])
    assert report.exit_code == 0, report.output
    assert "| **80.25 ± 0.35** (paper 80.5) |" in report.stdout and "| +10.00 ± 1.52 |" in report.stdout

    needed = runner.invoke(app, ["-f", str(toml), "report", "g", "--seeds-needed", "--format", "json"])
    assert needed.exit_code == 0, needed.output
    (row,) = json.loads(needed.stdout)["groups"][0]["rows"]
    # pooled sd 0.35355, |Δ| 10: n = 2 already gives 4.3027 * 0.35355 * 1 = 1.52 < 10
    assert row["experiment"] == "longer" and row["seeds_needed"] == 2
