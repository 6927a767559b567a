"""``mdtui report`` tables, ``compare``, and the result verbs through the CLI."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import time
from pathlib import Path

import pytest
import typer
from results_helpers import PLAN_TOML, make_run, md_table_shape_ok, write_plan
from typer.testing import CliRunner

from mdtui.commands.results import register
from mdtui.results.compare import compare_runs, format_comparison
from mdtui.results.report import ReportError, Stat, aggregate, build_tables, render_report
from mdtui.runs.store import RunStore

GOLDEN = Path(__file__).parent / "golden"
LT = "ResNet32 + synth-LT (ρ=10)"
T04, T05 = "refl[loss.threshold=0.4]", "refl[loss.threshold=0.5]"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def rid(n: int) -> str:
    return f"20240101-000000-{n:04x}"


def build_project(tmp_path):
    plan = write_plan(tmp_path)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    lt = {"many": 80.0, "medium": 60.0, "few": 40.0}
    runs = [
        ("ce", 69.0, 0, lt),
        ("ce", 70.0, 1, lt),
        ("ce", 71.0, 2, lt),
        (T04, 72.0, 0, {"many": 82.0, "medium": 70.0, "few": 55.0, "leaky": True}),
        (T04, 74.0, 1, {"many": 84.0, "medium": 72.0, "few": 57.0}),
        (T05, 68.69, 0, {"many": 85.0, "medium": 61.0, "few": 30.0}),
        ("fl", 70.5, 0, {"note": "gamma 2 | check *this*"}),
        ("flat", 90.0, 0, {}),
        ("flat-ls", 91.0, 0, {}),
    ]
    for n, (name, acc1, seed, extra) in enumerate(runs, start=1):
        make_run(store, plan, name, run_id=rid(n), acc1=acc1, seed=seed, created_t=n, events=False, **extra)
    make_run(store, plan, T05, run_id=rid(99), status="failed", acc1=99.0, created_t=99, events=False)
    return plan, store


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Shared by the read-only tests (creating runs costs ~0.2 s each)."""
    return build_project(tmp_path_factory.mktemp("report"))


@pytest.fixture
def fresh_project(tmp_path):
    return build_project(tmp_path)


# --------------------------------------------------------------------------- goldens


@pytest.mark.parametrize("fmt,suffix", [("md", "md"), ("csv", "csv"), ("json", "json"), ("latex", "tex")])
def test_report_matches_golden(project, fmt, suffix):
    plan, store = project
    check_golden(f"report.{suffix}", render_report(store, plan, [], fmt=fmt))


@pytest.mark.parametrize("fmt,suffix", [("md", "md"), ("csv", "csv"), ("json", "json")])
def test_pivot_matches_golden(project, fmt, suffix):
    plan, store = project
    text = render_report(store, plan, [LT], fmt=fmt, pivot=("loss.name", "loss.threshold"))
    check_golden(f"report_pivot.{suffix}", text)


# --------------------------------------------------------------------------- aggregation


def test_seeds_aggregate_as_mean_std_n_and_failed_runs_are_ignored(project):
    plan, store = project
    table = build_tables(store, plan, [LT])[0]
    rows = {row.experiment: row for row in table.rows}
    assert rows["ce"].stats["acc1"] == Stat(70.0, 1.0, 3)
    mean, std, n = rows[T04].stats["acc1"].mean, rows[T04].stats["acc1"].std, rows[T04].stats["acc1"].n
    assert (mean, round(std, 4), n) == (73.0, 1.4142, 2)
    assert rows[T05].stats["acc1"] == Stat(68.69, None, 1)  # the failed 99% run is not a result
    assert "70.00 ± 1.00" in render_report(store, plan, [LT])


def test_agg_best_and_last(project):
    plan, store = project
    best = {r.experiment: r for r in build_tables(store, plan, [LT], agg="best")[0].rows}
    last = {r.experiment: r for r in build_tables(store, plan, [LT], agg="last")[0].rows}
    assert best["ce"].stats["acc1"] == Stat(71.0, None, 3)
    assert best["ce"].stats["err1"] == Stat(29.0, None, 3)  # the best run's err1, not the best err1
    assert last[T04].stats["acc1"].mean == 74.0 and last["ce"].stats["acc1"].mean == 71.0


def test_err1_best_is_the_lowest():
    class R:
        def __init__(self, err1):
            self.err1, self.best_acc1, self.created_t, self.run_id = err1, 100 - err1, 0, str(err1)

    assert aggregate([R(30.0), R(20.0)], "err1", "best", "err1") == Stat(20.0, None, 2)


def test_delta_against_the_baseline_aggregate_and_no_baseline_flag(project):
    plan, store = project
    rows = {r.experiment: r for r in build_tables(store, plan, [LT])[0].rows}
    assert rows["ce"].delta is None
    assert rows[T04].delta == pytest.approx(3.0)
    assert rows[T05].delta == pytest.approx(-1.31)
    text = render_report(store, plan, [LT])
    assert "| Δ acc1 |" in text and "| +3.00 ± 5.98 (within noise) |" in text
    assert "Δ" not in render_report(store, plan, [LT], baseline=False)
    few = {r.experiment: r for r in build_tables(store, plan, [LT], metric="few")[0].rows}
    assert few[T04].delta == pytest.approx(16.0)


def test_delta_has_a_welch_interval_over_seeds_or_says_1_seed(project):
    plan, store = project
    rows = {r.experiment: r for r in build_tables(store, plan, [LT])[0].rows}
    # refl 0.4: 72, 74 (sd sqrt 2); ce: 69, 70, 71 (sd 1). se^2 = 2/2 + 1/3 = 4/3; Welch df =
    # (4/3)^2 / (1^2 / 1 + (1/3)^2 / 2) = 32/19; t_0.975(32/19) = 5.17623 (mpmath) -> 5.17623 * 1.15470
    ci = rows[T04].delta_ci
    assert ci.df == pytest.approx(32 / 19) and ci.half_width == pytest.approx(5.97700, abs=1e-4)
    assert ci.verdict == "within noise" and (ci.n, ci.n_base) == (2, 3)
    assert rows[T05].delta_ci.verdict == "1 seed" and rows["ce"].delta_ci is None
    text = render_report(store, plan, [LT])
    assert "| -1.3 (1 seed) |" in text and "| +0.5 (1 seed) |" in text
    assert "Δ ± 95% Welch interval over seeds" in text
    # the best or latest run of each has no spread to judge by: a bare difference, no caption claim
    best = render_report(store, plan, [LT], agg="best")
    assert "| +3.00 |" in best and "Welch" not in best and "1 seed" not in best
    data = json.loads(render_report(store, plan, [LT], fmt="json"))
    t04 = next(r for r in data["groups"][0]["rows"] if r["experiment"] == T04)
    assert t04["delta_ci"]["verdict"] == "within noise"
    assert t04["delta_ci"]["low"] == pytest.approx(3 - 5.977, abs=1e-3)


def test_a_separated_delta_has_no_within_noise_mark(fresh_project):
    plan, store = fresh_project
    for n, acc1 in enumerate((80.0, 80.5), start=50):
        make_run(store, plan, "fl", run_id=rid(n), acc1=acc1, seed=n, created_t=n, events=False)
    # fl: 70.5, 80, 80.5 -> mean 77, sd 5.6347; not separated. flat-ls vs flat is 1 seed each.
    (row,) = [r for r in build_tables(store, plan, [LT])[0].rows if r.experiment == "fl"]
    assert row.delta_ci.verdict == "within noise"
    for n, acc1 in enumerate((91.5, 92.0), start=60):
        make_run(store, plan, "flat-ls", run_id=rid(n), acc1=acc1, seed=n, created_t=n, events=False)
    make_run(store, plan, "flat", run_id=rid(70), acc1=90.2, seed=1, created_t=70, events=False)
    # flat-ls 91, 91.5, 92 (mean 91.5, sd 0.5); flat 90, 90.2 (mean 90.1, sd 0.14142): Δ 1.4;
    # v = 0.08333 + 0.01 = 0.09333; df = 0.0087111 / (0.0034722 + 0.0001) = 2.43856;
    # t_0.975(2.43857) = 3.63991 (mpmath); half = 3.63991 * 0.30551 = 1.11201 < 1.4: separated
    (row,) = [r for r in build_tables(store, plan, ["balanced_synth"])[0].rows if not r.is_baseline]
    assert row.delta_ci.verdict == "separated"
    assert row.delta_ci.half_width == pytest.approx(1.11201, abs=1e-4)
    assert "| +1.40 ± 1.11 |" in render_report(store, plan, ["balanced_synth"])


def test_paper_figures_sit_beside_the_measured_ones(project):
    plan, store = project
    text = render_report(store, plan, [LT])
    assert "| **73.00 ± 1.41** (paper 71.8) |" in text and "| 68.69 (paper 71.8) |" in text
    csv_rows = list(csv.DictReader(io.StringIO(render_report(store, plan, [LT], fmt="csv"))))
    assert [r["paper_acc1"] for r in csv_rows] == ["", "71.8", "71.8", ""]
    data = json.loads(render_report(store, plan, [LT], fmt="json"))
    assert data["groups"][0]["rows"][1]["paper"] == {"acc1": 71.8, "source": "REFL, synth-LT"}


def test_seeds_needed_per_experiment_against_the_baseline(project):
    plan, store = project
    from mdtui.results.report import render_seeds_needed

    text = render_seeds_needed(store, plan, [LT])
    t04 = next(line for line in text.splitlines() if line.startswith("| `refl[loss.threshold=0.4]`"))
    # pooled sd of ce (sd 1, n 3) and refl 0.4 (sd sqrt 2, n 2): sqrt((2 + 2) / 3) = 1.15470; |Δ| = 3:
    # n = 2: t(2) 4.3027 * 1.15470 * 1 = 4.968 >= 3; n = 3: t(4) 2.7764 * 1.15470 * 0.81650 = 2.618 < 3
    assert (
        t04
        == "| `refl[loss.threshold=0.4]` | 73.00 ± 1.41 | +3.00 ± 5.98 (within noise) | 2 vs 3 | 3 per experiment |"
    )
    # refl 0.5 has one seed; the spread comes from ce alone (sd 1), |Δ| = 1.31: n = 5: t(8) 2.3060 *
    # sqrt(2/5) = 1.4584 >= 1.31; n = 6: t(10) 2.2281 * sqrt(1/3) = 1.2864 < 1.31 -> 6
    data = json.loads(render_seeds_needed(store, plan, [LT], fmt="json"))
    rows = {r["experiment"]: r for r in data["groups"][0]["rows"]}
    assert rows[T04]["seeds_needed"] == 3 and rows[T04]["pooled_sd"] == pytest.approx(1.1547, abs=1e-4)
    assert rows[T05]["pooled_sd"] == pytest.approx(1.0) and rows[T05]["seeds_needed"] == 6
    assert "ce" not in rows
    with pytest.raises(ReportError, match="md or json"):
        render_seeds_needed(store, plan, [LT], fmt="csv")


def test_seeds_needed_in_a_group_without_baseline_results(fresh_project):
    plan, store = fresh_project
    from mdtui.results.report import render_seeds_needed

    store.update(rid(8), status="failed")  # flat, the balanced group's baseline, has no result now
    text = render_seeds_needed(store, plan, ["balanced_synth"])
    assert "baseline `flat` has no result yet" in text


def test_delta_uses_the_baseline_even_when_it_is_not_selected(project):
    plan, store = project
    (row,) = build_tables(store, plan, [T04])[0].rows
    assert row.delta == pytest.approx(3.0)


def test_best_value_of_each_metric_column_is_bold(project):
    plan, store = project
    text = render_report(store, plan, [LT])
    row = next(line for line in text.splitlines() if line.startswith("| `refl[loss.threshold=0.4]`"))
    assert "**73.00 ± 1.41**" in row and "**27.00 ± 1.41**" in row  # acc1 max, err1 min
    assert "**56.00 ± 1.41**" in row  # few
    t05 = next(line for line in text.splitlines() if line.startswith("| `refl[loss.threshold=0.5]`"))
    assert "**85.00**" in t05 and "**68.69**" not in t05  # many: the best of that column only
    ce = next(line for line in text.splitlines() if line.startswith("| `ce`"))
    assert "**" not in ce


def test_json_and_csv_mark_the_best(project):
    plan, store = project
    data = json.loads(render_report(store, plan, [LT], fmt="json"))
    rows = {r["experiment"]: r for r in data["groups"][0]["rows"]}
    assert rows[T04]["metrics"]["acc1"]["best"] is True and rows["ce"]["metrics"]["acc1"]["best"] is False
    assert rows[T04]["leaky"] is True and rows["fl"]["notes"] == ["gamma 2 | check *this*"]
    table = list(csv.DictReader(io.StringIO(render_report(store, plan, [LT], fmt="csv"))))
    best = {r["experiment"]: r["best"].split() for r in table}
    assert best[T04] == ["acc1", "acc5", "err1", "medium", "few"] and best[T05] == ["many"]
    assert {r["experiment"]: r["acc1_std"] for r in table}["ce"] == "1"


def test_markdown_is_well_formed_even_with_pipes_in_names(tmp_path):
    toml = '[experiment."a|b"]\ngroup = "g|h"\nbaseline = true\nepochs = 1\n[experiment."c`d"]\ngroup = "g|h"\nepochs = 2\n'
    plan = write_plan(tmp_path, toml)
    store = RunStore(plan.settings.runs_dir)
    make_run(store, plan, "a|b", run_id=rid(1), events=False, note="x | y")
    make_run(store, plan, "c`d", run_id=rid(2), events=False)
    text = render_report(store, plan, [])
    assert md_table_shape_ok(text)
    assert "## g\\|h" in text and "`a\\|b` (baseline)" in text and "``c`d``" in text


def test_pivot_grid(project):
    plan, store = project
    (grid,) = __import__("mdtui.results.report", fromlist=["build_pivots"]).build_pivots(
        store, plan, [LT], ("loss.name", "loss.threshold")
    )
    assert grid.row_values == ["ce", "fl", "refl"] and grid.col_values == [0.4, 0.5, None]
    assert grid.cells[(2, 0)].mean == 73.0 and grid.cells[(0, 2)] == Stat(70.0, 1.0, 3)
    assert grid.best == {(2, 0)}
    assert md_table_shape_ok(render_report(store, plan, [LT], pivot=("loss.name", "loss.threshold")))


def test_selectors_group_table_experiment_and_unknown(project):
    plan, store = project
    assert [r.experiment for r in build_tables(store, plan, ["refl"])[0].rows] == [T05, T04]
    assert [t.group for t in build_tables(store, plan, ["balanced_synth", "ce"])] == ["balanced_synth", LT]
    with pytest.raises(ReportError, match='no group or experiment named "reff".*closest: refl'):
        render_report(store, plan, ["reff"])
    with pytest.raises(ReportError, match="unknown metric"):
        render_report(store, plan, [], metric="acc2")
    with pytest.raises(ReportError, match='sets "loss.thresh".*closest keys: loss.threshold'):
        render_report(store, plan, [LT], pivot=("loss.name", "loss.thresh"))


def test_runs_of_experiments_removed_from_the_plan_are_still_reported(project, tmp_path):
    _, store = project
    smaller = write_plan(tmp_path, PLAN_TOML.split("[experiment.fl]")[0])
    text = render_report(store, smaller, [])
    assert "| `fl` |" in text and "| `flat` |" in text


def test_no_runs_message(tmp_path):
    plan = write_plan(tmp_path)
    store = RunStore(plan.settings.runs_dir)
    assert render_report(store, plan, []) == "No completed runs match.\n"
    assert json.loads(render_report(store, plan, [], fmt="json"))["groups"] == []


def _bench():
    path = Path(__file__).parents[2] / "benchmarks" / "report_bench.py"
    spec = importlib.util.spec_from_file_location("report_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ten_thousand_runs_render_in_under_two_seconds(tmp_path):
    bench = _bench()
    plan, store = bench.build_store(tmp_path, 10_000, 10)
    # CPU time, not wall clock: under pytest-xdist other workers share the cores, and waiting for a
    # core is not the renderer's cost.
    start = time.process_time()
    text = render_report(store, plan, [])
    elapsed = time.process_time() - start
    assert text.count("\n## ") == 9 and elapsed < 2.0, elapsed


# --------------------------------------------------------------------------- compare


def test_compare_lists_only_differing_keys_and_metric_deltas(project):
    plan, store = project
    comparison = compare_runs([store.get(rid(1)), store.get(rid(4))])
    keys = [key for key, _ in comparison.config_rows]
    assert keys == ["experiment", "loss.label_smoothing", "loss.name", "loss.threshold", "optim.lr"] or set(
        keys
    ) >= {"loss.name", "loss.threshold", "optim.lr"}
    assert "epochs" not in keys and "run_id" not in keys and "seed" not in keys
    acc1 = next(m for m in comparison.metric_rows if m.name == "acc1")
    assert acc1.values == (69.0, 72.0) and acc1.deltas == (None, 3.0)
    text = format_comparison(comparison)
    assert "loss.threshold" in text and "(unset)" in text and "72.00 (+3.00)" in text


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(fresh_project):
    plan, store = fresh_project
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = {"file": str(plan.settings.path)}

    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_report_formats_and_errors(cli):
    result = cli("report", LT, "--format", "json", "--agg", "best")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["agg"] == "best"
    result = cli("report", "--pivot", "loss.name", "loss.threshold", "--metric", "few")
    assert result.exit_code == 0 and "`loss.name` \\\\ `loss.threshold`" in result.stdout
    bad = cli("report", "--metric", "acc9")
    assert bad.exit_code == 2 and "unknown metric" in bad.output and "Traceback" not in bad.output


def test_cli_report_seeds_needed(cli):
    result = cli("report", LT, "--seeds-needed")
    assert result.exit_code == 0, result.output
    assert "| seeds needed |" in result.stdout and "3 per experiment" in result.stdout
    as_json = cli("report", LT, "--seeds-needed", "--format", "json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["groups"][0]["baseline"] == "ce"
    for extra in (["--format", "csv"], ["--agg", "best"], ["--pivot", "loss.name", "loss.threshold"]):
        bad = cli("report", "--seeds-needed", *extra)
        assert bad.exit_code == 2 and "--seeds-needed" in bad.output and "Traceback" not in bad.output


def test_cli_note_plot_and_compare(cli, fresh_project, tmp_path):
    plan, store = fresh_project
    result = cli("note", rid(6), "lr too high")
    assert result.exit_code == 0 and "note saved" in result.output
    assert store.get(rid(6)).note == "lr too high"
    # plots need epoch events: give two runs some
    from results_helpers import write_events

    for n in (1, 4):
        rec = store.get(rid(n))
        write_events(rec.run_dir, rec.run_id, "completed", {"best_acc1": rec.best_acc1}, 3)
    out = tmp_path / "overlay.png"
    result = cli("plot", rid(1), rid(4), "-o", str(out), "--metric", "eval.loss")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert cli("plot", rid(1), "--metric", "eval.nope").exit_code == 2
    result = cli("compare", rid(1), rid(4))
    assert result.exit_code == 0 and "loss.threshold" in result.output and "+3.00" in result.output
    assert cli("compare", rid(1)).exit_code == 2


# --------------------------------------------------------------------------- the report on a terminal


@pytest.fixture
def on_a_terminal(monkeypatch):
    import mdtui.system.terminal as terminal

    def set_width(width: int) -> None:
        monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
        monkeypatch.setenv("COLUMNS", str(width))

    return set_width


def test_cli_report_piped_is_the_golden_markdown(cli):
    result = cli("report")
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("width", [200, 100, 80, 60])
def test_cli_report_on_a_terminal_is_a_table_that_fits(cli, on_a_terminal, width):
    on_a_terminal(width)
    result = cli("report")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert not any(line.startswith("|") for line in out.splitlines()) and "**" not in out  # not markdown
    assert all(len(line.rstrip()) <= width for line in out.splitlines()), out
    # numbers are whole: the headline mean of every experiment shows exactly as in the markdown
    for value in ("70.00", "68.69", "73.00", "70.50", "90.00", "91.00"):
        assert re.search(rf"(?<![\d.]){value}(?![\d])", out), value
    assert "…" not in "".join(re.findall(r"[\d.±+-]+…", out))  # no number ends in a cut
    assert LT in out and "balanced_synth" in out
    lt_block = out.split("balanced_synth")[0]
    flat = " ".join(lt_block.split())  # the footer wraps at the width
    if width >= 200:  # everything in one line per experiment, full knob keys, no legend needed
        assert "loss.threshold" in lt_block.splitlines()[1] and "70.00 ± 1.00" in lt_block
        assert "not shown" not in out
    else:  # shortened or numbered knob headers are explained, left-out columns are named
        assert "= loss.threshold" in flat or "not shown" in flat
    if width <= 80:
        assert "not shown at" in flat and "--format md" in flat


def test_cli_report_format_md_on_a_terminal_and_table_when_piped(cli, on_a_terminal, monkeypatch):
    forced = cli("report", "--format", "table")  # piped, but asked for: a table at $COLUMNS or 80
    assert forced.exit_code == 0 and "| ---" not in forced.stdout and "balanced_synth" in forced.stdout
    on_a_terminal(100)
    md = cli("report", "--format", "md")
    assert md.stdout == (GOLDEN / "report.md").read_text(encoding="utf-8")
    bad = cli("report", "--format", "table", "-o", "x.txt")
    assert bad.exit_code == 2 and "--format table" in bad.output


def test_terminal_pivot_folds_stats_before_cutting(project):
    from rich.console import Console

    from mdtui.results.render.terminal import terminal_pivots
    from mdtui.results.report import build_pivots

    plan, store = project
    pivots = build_pivots(store, plan, [LT], ("loss.name", "loss.threshold"))
    for width in (120, 40):
        out = io.StringIO()
        Console(file=out, width=width).print(*terminal_pivots(pivots, agg="mean", width=width))
        text = out.getvalue()
        assert "73.00" in text and all(len(line.rstrip()) <= width for line in text.splitlines())
    assert "±1.41" in text and "loss.name \\ loss.threshold" not in text  # folded, then the corner cut


def test_terminal_report_without_baseline_results_names_its_knobs_and_says_why_no_delta(fresh_project):
    from rich.console import Console

    from mdtui.results.render.terminal import terminal_tables

    plan, store = fresh_project
    for n in (1, 2, 3):
        store.update(rid(n), status="failed")  # ce, the baseline, has no result now
    tables = build_tables(store, plan, [LT])
    out = io.StringIO()
    Console(file=out, width=88).print(*terminal_tables(tables, agg="mean", width=88))
    text = out.getvalue()
    header = text.splitlines()[1]
    # named knob headers (shortened), not k1, k2: err1 and acc5 go first; no Δ column of dashes, the
    # footer says why
    assert "threshold" in header and "k1" not in header and "Δ" not in header
    assert "baseline ce has no result yet" in " ".join(text.split())
    assert all(len(line.rstrip()) <= 88 for line in text.splitlines())
