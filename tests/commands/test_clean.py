"""``mdtui gc`` and ``mdtui rm`` on a tree of real runs (real supervisors, the fake engine) with a
`from` dependant, a run started from an older upstream run, and a failed run's resume point
(mdtui/commands/clean.py, mdtui/runs/cleanup.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.execution import supervise
from mdtui.runs.cleanup import parse_age
from mdtui.runs.disk import fmt_size, tree_size
from mdtui.runs.prepare import create_run_for

runner = CliRunner()

# the tree fixture starts real supervisors and engines
pytestmark = pytest.mark.slow


def invoke(toml: Path, *args: str, input: str | None = None):
    return runner.invoke(app, ["-f", str(toml), *args], input=input, catch_exceptions=False)


def finish(store, plan, name: str, env: dict[str, str] | None = None):
    rec = create_run_for(plan, store, plan.experiments[name], seed=0, devices=["cpu"])
    assert supervise.wait_supervisor(
        supervise.launch(store, rec.run_id, devices=["cpu"], env=env), timeout=30
    )
    return store.get(rec.run_id)


def ckpt(rec, name: str) -> Path:
    return Path(rec.run_dir) / "checkpoints" / name


@pytest.fixture
def tree(tiny_toml, tiny_plan, store, fake_engine):
    """old: tiny, completed; waiting: tiny-focal created while `old` was tiny's latest (so it starts
    from old's best.pt) and not started; new: tiny, completed (tiny-focal's `from` now resolves to
    it); focal: tiny-focal, completed; broken: tiny-focal, failed at epoch 1 (a resume point)."""
    old = finish(store, tiny_plan, "tiny")
    waiting = create_run_for(tiny_plan, store, tiny_plan.experiments["tiny-focal"], seed=0, devices=["cpu"])
    new = finish(store, tiny_plan, "tiny")
    focal = finish(store, tiny_plan, "tiny-focal")
    broken = finish(store, tiny_plan, "tiny-focal", env={"FAKE_FAIL_AT": "1"})
    assert [r.status for r in (old, new, focal, broken)] == ["completed", "completed", "completed", "failed"]
    assert waiting.status == "created"
    return {"old": old, "waiting": waiting, "new": new, "focal": focal, "broken": broken}


def test_ages_and_sizes_read_and_print_as_people_write_them(tmp_path) -> None:
    assert parse_age("14d") == 14 * 86400 and parse_age("12h") == 43200 and parse_age("2w") == 14 * 86400
    with pytest.raises(ValueError, match="e.g. 14d"):
        parse_age("14 days")
    assert [fmt_size(n) for n in (0, 812, 46_347_264, 1_300_000_000)] == [
        "0 B",
        "812 B",
        "44.2 MiB",
        "1.21 GiB",
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1" * 1000)
    (tmp_path / "y").write_bytes(b"1" * 24)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "x")
    assert tree_size(tmp_path) == 1024 and tree_size(tmp_path / "missing") == 0


def test_gc_then_rm_on_a_tree_with_a_from_dependant(tiny_toml, tiny_plan, store, tree) -> None:
    """One tree for both (each real run costs a second or more): gc first, then rm."""
    gc_frees_only_what_nothing_needs(tiny_toml, tree)
    rm_refuses_unfinished_runs_and_removes_finished_ones(tiny_toml, tiny_plan, store, tree)


def gc_frees_only_what_nothing_needs(tiny_toml, tree) -> None:
    # sizes first: `status --all` has a column of them (piped: every value whole)
    header, *rows = invoke(tiny_toml, "status", "--all").output.splitlines()
    assert header.split()[-1] == "size"
    focal = next(r for r in rows if r.startswith(tree["focal"].run_id))
    assert focal.rstrip().endswith(fmt_size(tree_size(tree["focal"].run_dir)))
    assert "size" not in invoke(tiny_toml, "status").output.splitlines()[0]
    assert "freed 0 B in 0 checkpoints" in invoke(tiny_toml, "gc", "--older-than", "1h").output

    everything = {(k, n): ckpt(r, n) for k, r in tree.items() for n in ("best.pt", "last.pt")}
    present = {key for key, path in everything.items() if path.is_file()}
    dry = invoke(tiny_toml, "gc", "--keep", "none", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert {key for key, path in everything.items() if path.is_file()} == present  # nothing deleted
    would = {
        ("old", "last.pt"),
        ("new", "last.pt"),
        ("focal", "best.pt"),
        ("focal", "last.pt"),
        ("broken", "best.pt"),
    }
    total = sum(everything[k].stat().st_size for k in would)
    assert f"would free {fmt_size(total)} in 5 checkpoints" in dry.output
    # the JSON says the same, with why each protected one stays
    data = json.loads(invoke(tiny_toml, "gc", "--keep", "none", "--dry-run", "--json").output)
    assert {Path(f["path"]) for f in data["free"]} == {everything[k] for k in would}
    why = {Path(k["path"]): k["why"] for k in data["kept"]}
    assert (
        "tiny-focal" in why[everything["new", "best.pt"]]
        and "starts from it" in why[everything["new", "best.pt"]]
    )
    assert f"run {tree['waiting'].run_id}" in why[everything["old", "best.pt"]]
    assert "resume point" in why[everything["broken", "last.pt"]]

    done = invoke(tiny_toml, "gc", "--keep", "none")
    assert done.exit_code == 0 and f"freed {fmt_size(total)} in 5 checkpoints" in done.output
    assert {key for key, path in everything.items() if path.is_file()} == present - would
    # the dependant still starts: tiny-focal resolves `from` to new's best.pt, which is there
    assert invoke(tiny_toml, "gc", "--dry-run").output.strip().endswith("would free 0 B in 0 checkpoints")


def test_gc_refuses_bad_options(tiny_toml) -> None:
    bad = runner.invoke(app, ["-f", str(tiny_toml), "gc", "--keep", "newest"])
    assert bad.exit_code == 2 and "best, last, both, none" in bad.output
    bad = runner.invoke(app, ["-f", str(tiny_toml), "gc", "--older-than", "soon"])
    assert bad.exit_code == 2 and "e.g. 14d" in bad.output


def rm_refuses_unfinished_runs_and_removes_finished_ones(tiny_toml, tiny_plan, store, tree) -> None:
    refused = runner.invoke(app, ["-f", str(tiny_toml), "rm", "tiny-focal", "--yes"])
    assert (
        refused.exit_code == 2
        and tree["waiting"].run_id in refused.output
        and "nothing removed" in refused.output
    )
    assert Path(tree["focal"].run_dir).is_dir()

    focal = tree["focal"]
    size = tree_size(focal.run_dir)
    no = invoke(tiny_toml, "rm", focal.run_id, input="n\n")
    assert no.exit_code == 1 and Path(focal.run_dir).is_dir()
    gone = invoke(tiny_toml, "rm", focal.run_id, "--yes")
    assert gone.exit_code == 0 and f"removed 1 run, freed {fmt_size(size)}" in gone.output
    assert not Path(focal.run_dir).exists() and store.get(focal.run_id) is None
    assert focal.run_id in tiny_plan.settings.results_log.read_text()  # the notebook keeps its entry
    assert store.reindex() == 4  # and a rebuilt index does not bring it back

    # the upstream a dependant starts from can go; rm says what that means
    new = invoke(tiny_toml, "rm", tree["new"].run_id, "--yes")
    assert "tiny-focal" in new.output and "older completed run" in new.output
    assert store.latest_completed("tiny").run_id == tree["old"].run_id
