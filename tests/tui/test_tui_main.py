"""The main screen as users meet it (issue 12): no crash on user text, say why nothing happens, keys people know.

Each test drives the real app with Pilot over the tiny project, fake GPUs and the fake engine
(real supervisor and engine processes where runs matter).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import tui_helpers
from conftest import REPO, controller_down
from tui_helpers import SIZE, runs_of, until, write_toml

from mdtui.tui.app import MdtuiApp, exit_status
from mdtui.tui.screens.confirm import ConfirmDialog
from mdtui.tui.screens.device_picker import DevicePickerDialog
from mdtui.tui.screens.main import MainScreen
from mdtui.tui.widgets.device_list import DeviceList
from mdtui.tui.widgets.experiment_table import ExperimentTable
from mdtui.tui.widgets.gpu_panel import GpuPanel
from mdtui.tui.widgets.run_table import RunTable

fake_world = tui_helpers.fake_world  # a fixture, used by name
project = tui_helpers.project  # a fixture, used by name


def notes(app: Any) -> list[Any]:
    """The notifications on screen now."""
    return list(app._notifications)


def said(app: Any, *words: str) -> Any:
    """The first notification containing every one of ``words``, or None."""
    return next((n for n in notes(app) if all(w in n.message for w in words)), None)


# ---------------------------------------------------------------------------------------------- bug 1


async def test_palette_opens_on_the_shipped_file_whose_names_look_like_markup(tmp_path: Path) -> None:
    """`kft-cbs-refl[optim.lr=1e-05]` was read as Rich markup: ctrl+p killed the app (and exited 0)."""
    shutil.copy(REPO / "experiments.toml", tmp_path / "experiments.toml")
    app = MdtuiApp(tmp_path / "experiments.toml")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        assert any("[optim.lr=1e-05]" in r.name for r in app.snapshot.experiments)
        await pilot.press("ctrl+p")
        palette = await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette" and app.screen)
        await pilot.press(*"kft-cbs-refl")
        await pilot.pause(0.5)
        from textual.command import CommandList

        shown = palette.query_one(CommandList)
        await until(pilot, lambda: shown.option_count > 0)
        prompts = [str(shown.get_option_at_index(i).prompt) for i in range(shown.option_count)]
        assert any("kft-cbs-refl[optim.lr=1e-05]" in p for p in prompts), prompts[:5]
        await pilot.press("escape")
    assert app.return_code in (0, None)


async def test_markup_in_names_and_messages_is_shown_as_written(tmp_path: Path) -> None:
    body = tui_helpers.TINY_TOML.replace(
        "gamma = 2.0 }", 'gamma = 2.0 }\nsweep = { "loss.gamma" = [1.0, 2.0] }'
    )
    toml = write_toml(tmp_path, body=body)
    app = MdtuiApp(toml)
    name = "tiny-focal[loss.gamma=2.0]"
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(ExperimentTable)
        await until(pilot, lambda: name in table.keys())  # noqa: SIM118 (a table, not a dict)
        assert table.get_cell(name, "name").plain.strip() == name
        app.say(f"failed: {name} [$x][A=1]\x1b[31m")
        await pilot.pause(0.1)
        assert said(app, f"{name} [$x][A=1]\\x1b[31m")  # control characters made visible, brackets kept
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
        await pilot.pause(0.5)  # discovery hits rendered: the names did not crash the palette
        await pilot.press("escape")


def test_markup_escape_round_trips_any_text() -> None:
    from textual.content import Content

    from mdtui.tui.text import markup_escape

    for text in [
        "a[$x]b",
        "[A=1]",
        "[b]x[/b]",
        "\\[b]x",
        "end\\",
        "[@click=app.quit]q[/]",
        "x]y[z",
        "[1e-05]",
    ]:
        assert Content.from_markup(markup_escape(text)).plain == text


async def test_a_crash_exits_non_zero_with_a_readable_message(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(self: MainScreen, reverse: bool = False) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(MainScreen, "action_sort", broken)
    app = MdtuiApp(project)
    with pytest.raises(RuntimeError, match="boom"):
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("s")
            await pilot.pause(0.5)
    assert exit_status(app) == 1
    assert "internal error" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- bug 2


async def test_r_a_d_with_a_broken_file_say_why_instead_of_nothing(tmp_path: Path) -> None:
    toml = write_toml(tmp_path)
    toml.write_text(toml.read_text().replace("epochs = 3", "epochs = -3"))  # [defaults]: every experiment
    app = MdtuiApp(toml)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query_one("#plan-error").display)
        for key in ("r", "a", "d"):
            app.clear_notifications()
            await pilot.press(key)
            await until(pilot, lambda: said(app, "experiments.toml has errors"))
        empty = app.screen.query_one("#experiments-empty")
        assert empty.display and "has errors" in str(empty.render())


async def test_an_error_in_one_experiment_leaves_the_others_runnable(tmp_path: Path) -> None:
    toml = write_toml(tmp_path)
    toml.write_text(toml.read_text().replace("gamma = 2.0", "gamma = -2.0"))  # only tiny-focal is broken
    app = MdtuiApp(toml)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.screen.query_one("#plan-error")
        await until(pilot, lambda: banner.display)
        assert "Left out until fixed: tiny-focal" in str(banner.render())
        table = app.screen.query_one(ExperimentTable)
        await until(pilot, lambda: table.keys() == ["tiny"])
        await pilot.press("r")
        done = await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "completed"], 30)
        assert done[0].experiment == "tiny"


# ---------------------------------------------------------------------------------------------- bugs 3, 4


async def test_a_failed_run_is_announced_with_its_reason(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL_AT", "1")
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        await pilot.press("r")
        started = await until(pilot, lambda: said(app, "started tiny (…"))
        assert started.timeout <= 5  # it covers the GPU panel: gone in seconds, not 45
        failed = await until(pilot, lambda: said(app, "failed"), 30)
        assert "tiny" in failed.message and "fake failure at epoch 1" in failed.message
        assert failed.severity == "error"


# ---------------------------------------------------------------------------------------------- bug 5


async def test_r_on_the_busy_cpu_queues_and_says_so_and_x_says_cancelled(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU, runs_per_device = 1: a second run waits instead of sharing the CPU."""
    monkeypatch.delenv("MDTUI_FAKE_GPUS", raising=False)
    monkeypatch.setattr("mdtui.system.gpus._nvml_devices", lambda: [])
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "30")
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        await pilot.press("r")
        await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "running"], 30)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: said(app, "queued tiny: no free device now"))
        queued = await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "queued"], 15)
        assert [r.status for r in app.snapshot.runs].count("running") == 1
        await pilot.press("2")
        table = app.screen.query_one(RunTable)
        await until(pilot, lambda: queued[0].run_id in table.keys())  # noqa: SIM118 (a table, not a dict)
        table.move_cursor(row=table.keys().index(queued[0].run_id))
        app.clear_notifications()
        await pilot.press("x")
        await until(pilot, lambda: runs_of(app)[queued[0].run_id].status == "cancelled")
        assert said(app, "cancelled") and not said(app, "stopping")


# ---------------------------------------------------------------------------------------------- bug 6


async def test_device_picker_marks_picks_with_a_glyph_and_offers_the_cpu(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "5")  # running long enough for a refresh to see it so
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.devices)
        await pilot.press("d")
        picker = await until(pilot, lambda: isinstance(app.screen, DevicePickerDialog) and app.screen)
        devices = picker.query_one(DeviceList)
        assert [d for d, _ in devices.entries] == ["0", "1", "cpu"]
        prompts = lambda: [str(devices.get_option_at_index(i).prompt) for i in range(3)]  # noqa: E731
        assert all(p.startswith("[ ] ") for p in prompts())
        await pilot.press("space")
        assert prompts()[0].startswith("[x] ") and prompts()[1].startswith("[ ] ")
        await pilot.press("end", "space", "enter")  # 0 and cpu: refused, the dialog stays
        assert isinstance(app.screen, DevicePickerDialog)
        await pilot.press("home", "space", "enter")  # unpick 0: cpu alone
        run = await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "running"], 30)
        assert run[0].devices == "cpu"
        panel = app.screen.query_one(GpuPanel)
        await until(pilot, lambda: any(str(row[0]) == "cpu" for row in panel.rows))
        cpu_row = next(row for row in panel.rows if str(row[0]) == "cpu")
        assert run[0].run_id.endswith(str(cpu_row[4]).split(", ")[0])


def test_gpu_panel_names_runs_by_ends_that_tell_them_apart() -> None:
    from mdtui.tui.widgets.gpu_panel import run_suffixes

    same_minute = ["20261201-160714-ab12", "20261201-160714-cd34"]
    assert run_suffixes(same_minute, 4) == ["ab12", "cd34"]
    assert run_suffixes(["20261201-160714-ab12", "20261201-170714-ab12"], 4) == ["60714-ab12", "70714-ab12"]


def test_middle_cut_keeps_the_distinguishing_end_of_sweep_points() -> None:
    from mdtui.tui.widgets.cells import render_cell

    points = [f"r32-c10lt-refl-cos[loss.threshold={t}]" for t in (0.2, 0.4, 0.6, 0.8)]
    cut = [render_cell(p, 24, middle=True).plain for p in points]
    assert len(set(cut)) == 4 and all(len(c) <= 23 and "…" in c for c in cut)
    assert all(c.startswith("r32-") for c in cut)


# ---------------------------------------------------------------------------------------------- stop, kill


async def test_stop_dialog_defaults_to_cancel_then_counts_down_and_K_again_kills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = write_toml(tmp_path)
    toml.write_text(toml.read_text().replace("stop_grace_seconds = 10", "stop_grace_seconds = 60"))
    monkeypatch.setenv("FAKE_IGNORE_TERM", "1")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "30")
    app = MdtuiApp(toml)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot.experiments)
            await pilot.press("r")
            live = await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "running"], 30)
            run_id = live[0].run_id
            await pilot.press("2")
            table = app.screen.query_one(RunTable)
            await until(pilot, lambda: table.current_key() == run_id)

            await pilot.press("K")
            await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.press("enter")  # the focused button is Cancel
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.pause(0.5)
            assert runs_of(app)[run_id].stop_deadline is None

            await pilot.press("K")
            await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.press("y")
            status = lambda: table.get_cell(run_id, "status").plain.strip()  # noqa: E731
            await until(pilot, lambda: status().startswith("stopping ("))
            assert status().endswith("s)") and 50 <= int(status()[len("stopping (") : -2]) <= 60

            await pilot.press("K")  # again: offers an immediate kill
            dialog = await until(pilot, lambda: isinstance(app.screen, ConfirmDialog) and app.screen)
            assert dialog.yes == "Kill now" and "Already stopping" in dialog.question
            await pilot.press("y")
            await until(pilot, lambda: runs_of(app)[run_id].status == "stopped", 20)
    finally:
        tui_helpers.kill_everything(tmp_path / "runs")


async def test_stop_dialog_wraps_its_text_at_80_columns(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "30")
    app = MdtuiApp(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        await pilot.press("r")
        await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "running"], 30)
        await pilot.press("K")
        dialog = await until(pilot, lambda: isinstance(app.screen, ConfirmDialog) and app.screen)
        await pilot.pause(0.2)
        question = dialog.query_one("#question")
        assert question.size.height >= 2  # wrapped onto several lines, not cut at the edge
        await pilot.press("q")  # q goes back from a dialog
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


# ---------------------------------------------------------------------------------------------- conventions


async def test_home_end_g_G_move_to_first_and_last_and_ctrl_c_gives_a_hint(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(ExperimentTable)
        await until(pilot, lambda: table.keys() == ["tiny", "tiny-focal"])
        for key, row in (("G", 1), ("g", 0), ("end", 1), ("home", 0), ("j", 1), ("k", 0)):
            await pilot.press(key)
            assert table.cursor_row == row, key
        await pilot.press("ctrl+c")
        await until(pilot, lambda: said(app, "Press q to quit"))
        assert isinstance(app.screen, MainScreen)


async def test_an_empty_filter_result_says_so(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(ExperimentTable)
        await until(pilot, lambda: table.keys())
        empty = app.screen.query_one("#experiments-empty")
        assert not empty.display
        await pilot.press("slash", *"zzz")
        await until(pilot, lambda: empty.display)
        assert "No experiment matches “zzz”" in str(empty.render())
        await pilot.press("escape")
        await until(pilot, lambda: not empty.display and table.keys())


def test_an_experiment_row_shows_its_live_run_before_a_newer_one() -> None:
    from types import SimpleNamespace

    from mdtui.views.dashboard import WAITING_STATUSES, latest_per_experiment

    newest_first = [
        SimpleNamespace(run_id="3", experiment="a", status="queued"),
        SimpleNamespace(run_id="2", experiment="a", status="running"),
        SimpleNamespace(run_id="1", experiment="a", status="completed"),
        SimpleNamespace(run_id="4", experiment="b", status="failed"),
    ]
    latest = latest_per_experiment(newest_first)
    assert latest["a"].run_id == "2" and latest["b"].run_id == "4"
    assert "created" not in WAITING_STATUSES  # nothing starts a created run by itself


async def test_an_action_that_raises_is_said_not_swallowed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = MdtuiApp(project)

    def broken(names: list[str], devices: list[str] | None = None) -> Any:
        raise RuntimeError("database is locked")

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        monkeypatch.setattr(app.dashboard, "start_now", broken)
        await pilot.press("r")
        note = await until(pilot, lambda: said(app, "failed", "database is locked"))
        assert note.severity == "error"


def test_device_picker_names_holding_runs_by_their_distinct_ends_on_one_line() -> None:
    """Whole run ids wrapped the device line at 80 columns; the ends that tell runs apart suffice."""
    from types import SimpleNamespace

    from mdtui.tui.screens.device_picker import picker_entries

    gpu = SimpleNamespace(id="0", name="Fake GPU", memory_free_mb=24 * 1024, utilization=0, processes=())
    holders = {"0": ("20261201-160714-3f36",), "cpu": ("20261201-160714-9f36",)}
    labels = dict(picker_entries([gpu], holders))
    assert labels["0"].endswith("mdtui: 3f36") and "20261201" not in labels["0"]
    assert labels["cpu"].endswith("mdtui: 9f36")
    assert all(len(label) <= 66 for label in labels.values())  # the picker's list is 66 columns at 80x24


# ---------------------------------------------------------------------------------------------- issue 20


async def test_an_outside_edit_of_experiments_toml_is_read_by_itself_keeping_the_selection(
    project: Path,
) -> None:
    from tui_helpers import TINY_TOML

    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        table = app.screen.query_one(ExperimentTable)
        table.move_cursor(row=1)
        await pilot.press("space")
        assert table.selected == {"tiny-focal"}
        project.write_text(TINY_TOML.replace("[experiment.tiny]", "[experiment.tiny]\nepochs = 'x'"))
        await until(pilot, lambda: app.snapshot.plan_error and said(app, "changed on disk", "errors"))
        assert app.screen.query_one("#plan-error").display
        project.write_text(
            TINY_TOML + '\n[experiment.tiny-ls]\ngroup = "demo"\nfrom = "tiny"\nloss = "ldam"\n'
        )
        await until(pilot, lambda: "tiny-ls" in table.keys() and not app.snapshot.plan_error)  # noqa: SIM118
        assert said(app, "changed on disk: reloaded")
        assert not app.screen.query_one("#plan-error").display
        assert table.selected == {"tiny-focal"}  # back with its row once the file is fixed
        assert table.current_key() == "tiny-focal"  # the cursor too


async def test_e_in_an_empty_folder_offers_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITOR", "true")  # the "editor" exits at once
    path = tmp_path / "experiments.toml"
    app = MdtuiApp(path)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.plan_missing and app.snapshot.devices)
        assert "No experiments.toml here yet" in str(app.screen.query_one("#plan-error").render())
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: {e.name for e in app.snapshot.experiments} >= {"demo-ce", "demo-refl"})
        assert not app.snapshot.plan_error and not app.screen.query_one("#plan-error").display


async def test_the_main_screen_says_slurm_is_unreachable_within_a_poll(project: Path, monkeypatch) -> None:
    """Controller down: only a run's detail said "Slurm unreachable — last known state at T"; the main
    screen says it too (its subtitle, on every tab) at the next poll, and stops saying it once Slurm
    answers again."""
    import time

    from mdtui.execution import slurm_status
    from mdtui.registry.plan import load_plan
    from mdtui.runs.prepare import create_run_for
    from mdtui.runs.store import RunStore
    from mdtui.system.slurm import JobState

    controller_down(monkeypatch)
    plan = load_plan(project)
    store = RunStore(project.parent / "runs")
    rec = create_run_for(plan, store, plan.experiments["tiny"], seed=0, devices=[], status="running")
    store.update(rec.run_id, job_id="71", job_state="RUNNING on n1, 3m")
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        start = time.monotonic()
        await until(pilot, lambda: "Slurm unreachable — last known state at " in app.screen.sub_title)
        assert time.monotonic() - start < 5.0  # the first poll (LIVENESS_SECONDS = 2) says it
        assert app.snapshot.slurm_outage and app.snapshot.slurm_outage in app.screen.sub_title
        answer = JobState("71", "RUNNING", None, "n1", 240, None, None, None, 0)
        monkeypatch.setattr(slurm_status.slurm_cli, "job_states", lambda ids: {"71": answer})
        await until(pilot, lambda: "Slurm unreachable" not in app.screen.sub_title)
        assert app.snapshot.slurm_outage is None
