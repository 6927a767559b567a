"""What the CLI prints as users meet it: user text shown as text, tables that fit or print in full."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.text import Text
from typer.testing import CliRunner

import mdtui.system.terminal as terminal
from mdtui.cli import app
from mdtui.system.terminal import SafeConsole
from mdtui.system.text import cell_width

runner = CliRunner()

LIST_TOML = """\
[settings]
runs_dir = "runs"

[defaults]
epochs = 15
model = "resnet50"
data = { name = "cifar100", imbalance_ratio = 100 }
loss = "ce"

[experiment.r32-c10lt-refl-cos]
group = "ResNet32 + CIFAR-100-LT (ρ=100) [red]x[/red]"
baseline = true
loss = { name = "refl", threshold = 0.5 }
optim = { name = "sgd", lr = 1e-5 }
sweep = { "loss.threshold" = [0.5, 0.4, 0.3], "optim.lr" = [1e-5, 0.1] }

[experiment.ft]
group = "other"
from = "r32-c10lt-refl-cos[loss.threshold=0.4,optim.lr=1e-05]"
"""
SWEEP_NAMES = [
    f"r32-c10lt-refl-cos[loss.threshold={t},optim.lr={lr}]" for t in (0.5, 0.4, 0.3) for lr in ("1e-05", 0.1)
]


def invoke(toml: Path, *args: str):
    return runner.invoke(app, ["-f", str(toml), *args])


@pytest.fixture
def list_toml(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(LIST_TOML, encoding="utf-8")
    return path


@pytest.fixture
def on_a_terminal(monkeypatch: pytest.MonkeyPatch):
    """stdout counts as a terminal of ``width`` columns (CliRunner's stdout is not a TTY)."""

    def set_width(width: int) -> None:
        monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
        monkeypatch.setenv("COLUMNS", str(width))

    return set_width


# --------------------------------------------------------------------------- user text stays text


def test_validate_shows_control_characters_in_names_escaped(tmp_path: Path) -> None:
    toml = tmp_path / "experiments.toml"
    toml.write_text(
        '[defaults]\nmodel = "resnet32"\ndata = "digits"\nloss = "ce"\n'
        '[experiment."a\\u001b[31mred"]\ngroup = "g"\nmodel = "resnet5\\u001b[0m"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["validate", str(toml)])
    assert result.exit_code == 2
    assert "\x1b" not in result.output
    assert r'"a\x1b[31mred"' in result.output and r'"resnet5\x1b[0m"' in result.output


def test_errors_print_names_literally_not_as_markup(list_toml: Path) -> None:
    result = invoke(list_toml, "run", "nope[bold]x[/bold]")
    assert result.exit_code == 2
    assert 'nope[bold]x[/bold]"' in result.output and "Traceback" not in result.output


def test_sweep_names_and_markup_in_values_survive_list(list_toml: Path) -> None:
    result = invoke(list_toml, "list")
    assert result.exit_code == 0, result.output
    for name in SWEEP_NAMES:
        assert name in result.output
    assert "ResNet32 + CIFAR-100-LT (ρ=100) [red]x[/red]" in result.output


def test_status_shows_notes_with_control_characters_escaped(list_toml: Path) -> None:
    from results_helpers import make_run

    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    plan = load_plan(list_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    make_run(store, plan, "ft", run_id="20240101-000000-0001", note="\x1b]0;pwned\x07 [red]n[/red]")
    result = invoke(list_toml, "status")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert r"\x1b]0;pwned\x07 [red]n[/red]" in result.output


def test_run_outcome_line_keeps_the_sweep_point_of_the_name(list_toml: Path) -> None:
    from results_helpers import make_run

    from mdtui.commands.common import console
    from mdtui.commands.run import report_line
    from mdtui.registry.plan import load_plan
    from mdtui.runs.store import RunStore

    plan = load_plan(list_toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    rec = make_run(store, plan, SWEEP_NAMES[0], run_id="20240101-000000-0002", events=False)
    with console.capture() as captured:
        console.print(report_line(rec), soft_wrap=True)
    assert captured.get().startswith(f"completed {SWEEP_NAMES[0]} run 20240101-000000-0002: best acc1 70.00%")


def test_safe_console_escapes_control_characters_but_keeps_its_own_styles() -> None:
    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, color_system="standard", width=80)
    console.print(Text("a\x1b[31mb\u202ec\rd", style="bold"), "[red]e[/red]")
    text = out.getvalue()
    assert "\x1b[1m" in text  # Rich's own style codes pass
    # (Rich itself drops \r, \b and BEL from Text; ESC and direction overrides it would print.)
    assert r"a\x1b[31mb\u202ecd" in text and "[red]e[/red]" in text
    assert "\x1b[31m" not in text and "\r" not in text and "\u202e" not in text


# --------------------------------------------------------------------------- mdtui list


def test_list_piped_prints_every_value_in_full(list_toml: Path) -> None:
    result = invoke(list_toml, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout
    row = next(line for line in lines if line.startswith("ft "))
    cells = re.split(r"\s{2,}", row)
    assert cells[:7] == [
        "ft",
        "other",
        "resnet50",
        "cifar100 ρ=100",
        "ce",
        "15",
        "r32-c10lt-refl-cos[loss.threshold=0.4,optim.lr=1e-05]",
    ]
    assert max(cell_width(line) for line in lines) > 150  # no width limit when piped


@pytest.mark.parametrize("width", [120, 80, 60, 40])
def test_list_on_a_terminal_fits_with_visible_cuts_that_keep_sweep_points(
    list_toml: Path, on_a_terminal, width: int
) -> None:
    on_a_terminal(width)
    result = invoke(list_toml, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    table, note = lines[:-1], lines[-1]
    assert all(cell_width(line.rstrip()) <= width for line in table), "\n".join(table)
    rows = [line.split("  ")[0] for line in table[1:7]]
    assert len(set(rows)) == 6  # the six sweep points stay distinguishable
    assert all("…" in r for r in rows)  # and every cut is visible
    assert all(re.search(r"\[.*0\.[543].*\]", r) for r in rows)
    # numbers are never cut: each row either shows the epochs whole or drops the column (and says so)
    if " epochs" in table[0]:
        assert all(re.search(r"\s15(\s|$)", line) for line in table[1:])
    else:
        assert "epochs" in note
    assert " resnet5 " not in result.stdout and "ρ=1 " not in result.stdout
    if width < 120:
        assert "not shown at" in note


# --------------------------------------------------------------------------- runtime files and git


def git(cwd: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_a_fresh_git_project_sees_only_its_results_not_mdtui_runtime_files(tmp_path: Path) -> None:
    from results_helpers import make_run

    from mdtui.registry.plan import load_plan
    from mdtui.results.log import record_finished
    from mdtui.runs.store import RunStore

    toml = tmp_path / "experiments.toml"
    toml.write_text(LIST_TOML, encoding="utf-8")
    git(tmp_path, "init", "-q")
    plan = load_plan(toml)
    store = RunStore(plan.settings.runs_dir, experiments_file=toml)
    make_run(store, plan, "ft", run_id="20240101-000000-0001")
    record_finished(store, "20240101-000000-0001", plan=plan, plots=False)
    assert invoke(toml, "status").exit_code == 0
    assert "ft" in (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert (tmp_path / ".mdtui" / "RESULTS.md.lock").exists()  # the lock is there, and ignored
    untracked = git(tmp_path, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(untracked) == ["?? RESULTS.md", "?? experiments.toml"]


def test_an_existing_runs_directory_and_gitignore_are_left_alone(tmp_path: Path) -> None:
    from mdtui.runs.store import RunStore

    (tmp_path / "runs").mkdir()
    RunStore(tmp_path / "runs")
    assert not (tmp_path / "runs" / ".gitignore").exists()  # the user's directory: maybe tracked
    from mdtui.system.fs import git_ignored_dir

    (tmp_path / "own").mkdir()
    (tmp_path / "own" / ".gitignore").write_text("*.lock\n")
    git_ignored_dir(tmp_path / "own")
    assert (tmp_path / "own" / ".gitignore").read_text() == "*.lock\n"
