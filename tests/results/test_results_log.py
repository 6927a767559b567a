"""RESULTS.md: entries, Δ, escaping, the incomplete list, hand edits, notes, plots and the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from results_helpers import make_run, write_plan

from mdtui.results.log import (
    EntryFacts,
    attach_note,
    format_entry_base,
    format_incomplete_base,
    record_finished,
)
from mdtui.results.markdown import append_entry, headings, insert_in_section, md_code, md_escape
from mdtui.results.stats import Delta
from mdtui.runs.store import RunStore

GOLDEN = Path(__file__).parent / "golden"
LT = "ResNet32 + synth-LT (ρ=10)"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def skip_plots(request, monkeypatch):
    """Rendering PNGs costs ~1 s per run on CI; only the tests about plots draw them."""
    if "plot" not in request.node.name:
        monkeypatch.setattr("mdtui.results.log.write_plots", lambda *args, **kwargs: [])


@pytest.fixture
def project(tmp_path):
    plan = write_plan(tmp_path)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    return plan, store


def rid(n: int) -> str:
    return f"20240101-000000-{n:04x}"


# --------------------------------------------------------------------------- pure formatting


def test_entry_shows_knobs_metrics_delta_one_based_epoch_and_leaky():
    facts = EntryFacts(
        experiment="r32-refl[loss.threshold=0.4]",
        run_id="20240301-101010-beef",
        knobs={"loss.threshold": 0.4, "optim.lr": 1e-5},
        acc1=70.72,
        acc5=95.1,
        err1=29.28,
        best_epoch=160,
        epochs=200,
        many=90.1,
        medium=70.0,
        few=50.0,
        long_tailed=True,
        delta=Delta(1.3849, 0.5234, 3.9, n=3, n_base=4),
        seed=3,
        leaky=True,
    )
    assert format_entry_base(facts) == (
        "- `r32-refl[loss.threshold=0.4]` (`loss.threshold=0.4, optim.lr=1e-05`): acc1 is 70.72%, "
        "acc5 is 95.10%, err1 is 29.28%, best epoch 161/200; many 90.10%, medium 70.00%, few 50.00%; "
        "Δ acc1 +1.38 ± 0.52 (3 vs 4 seeds); seed 3, run `20240301-101010-beef` **leaky**"
    )


def test_entry_says_within_noise_or_1_seed_and_shows_the_papers_figures():
    noisy = EntryFacts("a", "r1", acc1=70.0, delta=Delta(0.41, 0.63, 2.0, n=2, n_base=3))
    assert "; Δ acc1 +0.41 ± 0.63 (within noise; 2 vs 3 seeds); " in format_entry_base(noisy)
    single = EntryFacts("a", "r1", acc1=70.0, delta=Delta(0.4049, None, None, n=1, n_base=3))
    assert "; Δ acc1 +0.4 (1 seed); " in format_entry_base(single)
    paper = {"acc1": 82.5, "few": 70, "source": "MiSLAS README"}
    line = format_entry_base(
        EntryFacts("m", "r1", acc1=82.1, many=90.0, few=69.0, long_tailed=True, paper=paper)
    )
    assert "acc1 is 82.10% (paper 82.5), acc5 is –, err1 is –" in line
    assert "many 90.00%, medium –, few 69.00% (paper 70);" in line


def test_entry_for_balanced_data_has_no_shot_groups_and_baseline_has_no_delta():
    facts = EntryFacts("ce", "r1", is_baseline=True, acc1=94.89, acc5=99.8, err1=5.11, best_epoch=0, epochs=5)
    line = format_entry_base(facts)
    assert line.startswith("- `ce` (baseline): acc1 is 94.89%")
    assert "many" not in line and "Δ" not in line and "best epoch 1/5" in line


def test_incomplete_line_is_short():
    facts = EntryFacts(
        "fl", "r9", status="failed", epochs=200, epochs_done=12, reason="CUDA out of memory\nat step 3"
    )
    assert (
        format_incomplete_base(facts)
        == "- `fl` failed after 12/200 epochs, run `r9`: CUDA out of memory at step 3"
    )


def test_escaping_of_names_and_notes():
    assert md_escape("a *b* _c_ [x](y) <b> | `z` ~d~ & \\") == (
        "a \\*b\\* \\_c\\_ \\[x\\](y) \\<b\\> \\| \\`z\\` \\~d\\~ \\& \\\\"
    )
    assert md_escape("two\nlines") == "two lines"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`edge") == "`` `edge ``"


def test_headings_ignore_fenced_code():
    lines = ["# T", "```", "## not a heading", "```", "## Real ##", "### sub"]
    assert headings(lines) == [(0, 1, "T"), (4, 2, "Real"), (5, 3, "sub")]


def test_insert_keeps_every_existing_line_and_new_groups_go_before_incomplete():
    text = "# Mine\n\nintro\n\n## G\n- mine\n\n### sub\ntext\n\n## Incomplete runs\n\n- x\n\n## Other\nkeep\n"
    out = insert_in_section(text, "G", "- new")
    assert out.splitlines()[:10] == ["# Mine", "", "intro", "", "## G", "- mine", "", "### sub", "text", ""]
    assert out.splitlines()[10] == "- new"  # after the subsection: still inside ## G
    out = insert_in_section(out, "H_2", "- h")
    lines = out.splitlines()
    assert lines.index("## H\\_2") < lines.index("## Incomplete runs")
    assert out.endswith("## Other\nkeep\n")


# --------------------------------------------------------------------------- record_finished


def finish_scenario(plan, store) -> None:
    make_run(store, plan, "ce", run_id=rid(1), acc1=69.34, many=80.0, medium=60.0, few=40.0, created_t=1)
    record_finished(store, rid(1))
    make_run(store, plan, "refl[loss.threshold=0.4]", run_id=rid(2), acc1=70.72, many=81.0, medium=62.0, few=45.5, leaky=True, created_t=2)  # fmt: skip
    make_run(
        store,
        plan,
        "refl[loss.threshold=0.4]",
        run_id=rid(3),
        seed=1,
        acc1=71.02,
        created_t=3,
        note="bs=32 *best*",
    )
    make_run(store, plan, "fl", run_id=rid(4), status="stopped", acc1=None, epochs_done=2, error="stopped by mdtui", created_t=4)  # fmt: skip
    make_run(
        store, plan, "fl", run_id=rid(5), status="failed", acc1=None, epochs_done=0, exit_code=1, created_t=5
    )
    make_run(store, plan, "flat", run_id=rid(6), acc1=90.0, created_t=6)
    make_run(store, plan, "flat-ls", run_id=rid(7), acc1=89.5, created_t=7)
    for n in range(2, 8):
        record_finished(store, rid(n))


def test_log_matches_golden(project):
    plan, store = project
    finish_scenario(plan, store)
    check_golden("results_log.md", plan.settings.results_log.read_text(encoding="utf-8"))


def test_delta_is_against_the_mean_of_the_completed_baseline_seeds(project):
    plan, store = project
    make_run(store, plan, "ce", run_id=rid(1), acc1=60.0, created_t=1)
    make_run(store, plan, "ce", run_id=rid(2), acc1=65.0, created_t=2)
    make_run(store, plan, "ce", run_id=rid(3), status="failed", acc1=99.0, created_t=3)
    make_run(store, plan, "fl", run_id=rid(4), acc1=66.25, created_t=4, events=False)
    record_finished(store, rid(4))
    # 66.25 - mean(60, 65) = 3.75; one seed of fl: no interval, and one decimal only
    assert "Δ acc1 +3.8 (1 seed)" in plan.settings.results_log.read_text(encoding="utf-8")


def test_delta_of_a_second_seed_has_a_welch_interval_over_both(project):
    plan, store = project
    for n, acc1 in enumerate([69.0, 70.0, 71.0], start=1):
        make_run(store, plan, "ce", run_id=rid(n), seed=n, acc1=acc1, created_t=n, events=False)
    make_run(store, plan, "fl", run_id=rid(4), seed=0, acc1=70.0, created_t=4, events=False)
    # the second seed is recorded as it is about to be indexed (still "running" in the index)
    second = make_run(store, plan, "fl", run_id=rid(5), seed=1, acc1=72.0, created_t=5, events=False)
    store.update(rid(5), status="running")
    record_finished(store, rid(5), record=second)
    # fl: mean 71, sd sqrt(2); ce: mean 70, sd 1. se^2 = 2/2 + 1/3 = 4/3; Welch df =
    # (4/3)^2 / (1^2/1 + (1/3)^2/2) = (16/9) / (19/18) = 32/19; t_0.975(32/19) = 5.1762 (mpmath);
    # half-width 5.1762 * sqrt(4/3) = 5.98
    text = plan.settings.results_log.read_text(encoding="utf-8")
    assert "Δ acc1 +1.00 ± 5.98 (within noise; 2 vs 3 seeds)" in text


def test_no_delta_without_a_completed_baseline(project):
    plan, store = project
    make_run(store, plan, "fl", run_id=rid(4), acc1=66.25, events=False)
    record_finished(store, rid(4))
    assert "Δ" not in plan.settings.results_log.read_text(encoding="utf-8")


def test_recording_twice_writes_one_entry(project):
    plan, store = project
    make_run(store, plan, "ce", run_id=rid(1))
    record_finished(store, rid(1))
    record_finished(store, rid(1))
    assert plan.settings.results_log.read_text(encoding="utf-8").count(rid(1)) == 1


def _lines_of(log: Path, run_id: str) -> list[str]:
    return [ln for ln in log.read_text(encoding="utf-8").splitlines() if f"run `{run_id}`" in ln]


def test_a_failed_run_resumed_to_completed_loses_its_incomplete_line(project):
    plan, store = project
    log = plan.settings.results_log
    make_run(
        store, plan, "ce", run_id=rid(1), status="failed", acc1=None, epochs=2, error="CUDA out of memory"
    )
    record_finished(store, rid(1))
    assert [ln.startswith("- `ce` failed") for ln in _lines_of(log, rid(1))] == [True]
    attach_note(store, rid(1), "OOM at bs 512")  # a note on the failed session, under the same heading
    store.update(rid(1), status="completed", best_acc1=71.0, error=None)
    record_finished(store, rid(1))
    lines = _lines_of(log, rid(1))
    assert len(lines) == 1 and "acc1 is 71.00%" in lines[0], lines
    text = log.read_text(encoding="utf-8")
    record_finished(store, rid(1))  # converged: recording again changes nothing
    assert log.read_text(encoding="utf-8") == text


def test_an_incomplete_line_follows_the_latest_ending_unless_edited(project):
    plan, store = project
    log = plan.settings.results_log
    make_run(store, plan, "fl", run_id=rid(1), status="lost", acc1=None, epochs=1)
    record_finished(store, rid(1))
    assert " lost after 1/" in _lines_of(log, rid(1))[0]
    store.update(rid(1), status="failed", error="boom", epochs_done=3)  # resumed, failed again
    record_finished(store, rid(1))
    assert [("failed after 3/" in ln and "boom" in ln) for ln in _lines_of(log, rid(1))] == [True]
    edited = log.read_text(encoding="utf-8").replace(": boom", ": boom (bad data, see issue 4)")
    log.write_text(edited, encoding="utf-8")
    store.update(rid(1), status="stopped", error=None)
    record_finished(store, rid(1))
    assert log.read_text(encoding="utf-8") == edited  # a person's words are kept


def test_recording_with_the_record_about_to_be_indexed(project):
    """The ending writes the log before the index: the status given wins over the indexed one."""
    import dataclasses

    plan, store = project
    rec = make_run(store, plan, "ce", run_id=rid(1), status="running")
    record_finished(store, rid(1), record=dataclasses.replace(rec, status="completed"))
    assert "acc1 is 70.00%" in _lines_of(plan.settings.results_log, rid(1))[0]
    assert store.get(rid(1)).status == "running"


def test_live_and_cancelled_runs_are_not_logged(project):
    plan, store = project
    make_run(store, plan, "ce", run_id=rid(1), status="running")
    make_run(store, plan, "ce", run_id=rid(2), status="cancelled")
    record_finished(store, rid(1))
    record_finished(store, rid(2))
    assert not plan.settings.results_log.exists()


def test_hand_edited_log_survives_appends(project):
    plan, store = project
    mine = textwrap.dedent(
        """\
        # My notebook

        Hand-written intro with a [link](https://example.org) and a table:

        | a | b |
        |---|---|
        | 1 | 2 |

        ```
        ## not a heading: inside a fence
        ```

        ## ResNet32 + synth-LT (ρ=10)
        - CE by hand: acc1 is 69.34%
        - **my own bold line**

        ## Someone's section
        free text stays here
        """
    )
    log = plan.settings.results_log
    log.write_text(mine, encoding="utf-8")
    make_run(store, plan, "ce", run_id=rid(1), acc1=70.0)
    make_run(store, plan, "flat", run_id=rid(2), acc1=90.0)
    make_run(store, plan, "fl", run_id=rid(3), status="stopped", acc1=None)
    for n in (1, 2, 3):
        record_finished(store, rid(n))
    after = log.read_text(encoding="utf-8").splitlines()
    original = mine.splitlines()
    # every original line is still there, in the same order
    remaining = iter(after)
    assert all(any(line == other for other in remaining) for line in original)
    entry = next(i for i, line in enumerate(after) if rid(1) in line)
    assert after[entry - 1] == "- **my own bold line**"  # end of its group's section
    assert after.index("## balanced\\_synth") > after.index("free text stays here")
    assert after.index("## Incomplete runs") > after.index("## balanced\\_synth")
    assert rid(3) in after[-1]


def test_escaped_experiment_names_and_notes(tmp_path):
    toml = '[experiment."odd *name* `x`"]\ngroup = "g|1"\nbaseline = true\nepochs = 1\n'
    plan = write_plan(tmp_path, toml)
    store = RunStore(plan.settings.runs_dir)
    make_run(store, plan, "odd *name* `x`", run_id=rid(1), note="see <b>this</b> | [x](y)\nsecond line")
    record_finished(store, rid(1), plan=plan)
    text = plan.settings.results_log.read_text(encoding="utf-8")
    assert "## g\\|1" in text
    assert "- `` odd *name* `x` `` (baseline)" in text
    assert "note: see \\<b\\>this\\</b\\> \\| \\[x\\](y) second line" in text


def test_incomplete_runs_list(project):
    plan, store = project
    make_run(store, plan, "fl", run_id=rid(1), status="stopped", acc1=None, epochs_done=3, epochs=4)
    make_run(store, plan, "fl", run_id=rid(2), status="lost", acc1=None, epochs_done=0, events=False)
    make_run(store, plan, "ce", run_id=rid(3), acc1=70.0)
    for n in (1, 2, 3):
        record_finished(store, rid(n))
    lines = plan.settings.results_log.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Incomplete runs")
    assert start > next(i for i, line in enumerate(lines) if rid(3) in line)
    assert lines[start + 2 :] == [
        f"- `fl` stopped after 3/4 epochs, run `{rid(1)}`",
        f"- `fl` lost after 0/4 epochs, run `{rid(2)}`: the supervisor vanished without an exit record",
    ]


def test_plots_are_written(project):
    plan, store = project
    lt = make_run(store, plan, "ce", run_id=rid(1), many=80.0, medium=60.0, few=40.0)
    flat = make_run(store, plan, "flat", run_id=rid(2))
    record_finished(store, rid(1))
    record_finished(store, rid(2))
    for path in (lt.run_dir / "artifacts/curves.png", lt.run_dir / "artifacts/per_class.png", flat.run_dir / "artifacts/curves.png"):  # fmt: skip
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert not (flat.run_dir / "artifacts/per_class.png").exists()  # balanced data: no per-class plot


# --------------------------------------------------------------------------- notes


def test_note_rerenders_an_unchanged_entry(project):
    plan, store = project
    make_run(store, plan, "ce", run_id=rid(1), note="first")
    record_finished(store, rid(1))
    assert attach_note(store, rid(1), "second *take*") == "updated"
    text = plan.settings.results_log.read_text(encoding="utf-8")
    assert "— note: second \\*take\\*" in text and "first" not in text
    assert store.get(rid(1)).note == "second *take*"
    import json

    assert json.loads((store.get(rid(1)).run_dir / "run.json").read_text())["note"] == "second *take*"


def test_note_on_a_hand_edited_entry_appends_a_line(project):
    plan, store = project
    make_run(store, plan, "ce", run_id=rid(1))
    record_finished(store, rid(1))
    log = plan.settings.results_log
    log.write_text(log.read_text(encoding="utf-8").replace("acc1 is", "ACC1 (checked) is"), encoding="utf-8")
    before = log.read_text(encoding="utf-8")
    assert attach_note(store, rid(1), "server died") == "appended"
    after = log.read_text(encoding="utf-8")
    assert after.startswith(before.rstrip("\n"))
    assert after.rstrip("\n").endswith(f"- note on run `{rid(1)}`: server died")


def test_note_before_the_run_finishes_appears_in_its_entry(project):
    plan, store = project
    make_run(store, plan, "ce", run_id=rid(1), status="running")
    assert attach_note(store, rid(1), "watch this one") == "stored"
    store.update(rid(1), status="completed")
    record_finished(store, rid(1))
    assert "— note: watch this one" in plan.settings.results_log.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the lock

APPENDER = """
import sys, time
from pathlib import Path
from mdtui.results.markdown import append_entry
log, start, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
while not start.exists():
    time.sleep(0.005)
append_entry(log, f"group {n % 3}", f"- entry {n} " + "x" * 2000, marker=f"entry {n} ")
"""


@pytest.mark.slow
def test_fifty_processes_appending_at_once_give_fifty_intact_entries(tmp_path):
    log = tmp_path / "RESULTS.md"
    start = tmp_path / "go"
    script = tmp_path / "append.py"
    script.write_text(APPENDER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    # -S: no site-packages scan at start-up (the appender needs only the repository and stdlib)
    procs = [
        subprocess.Popen([sys.executable, "-S", str(script), str(log), str(start), str(n)], env=env)
        for n in range(50)
    ]
    time.sleep(1.0)  # let the interpreters start, then release them together
    start.touch()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = log.read_text(encoding="utf-8").splitlines()
    entries = [line for line in lines if line.startswith("- entry ")]
    assert sorted(int(line.split()[2]) for line in entries) == list(range(50))
    assert all(line.endswith("x" * 2000) for line in entries)
    for group in range(3):
        start_at = lines.index(f"## group {group}")
        section = []
        for line in lines[start_at + 1 :]:
            if line.startswith("## "):
                break
            section.append(line)
        assert sorted(int(s.split()[2]) for s in section if s.startswith("- entry")) == [
            n for n in range(50) if n % 3 == group
        ]
    assert not append_entry(log, "group 0", "- dup", marker="entry 0 ")
