"""Run detail, its log and charts, compare, help and the Results screen, driven through Pilot (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import tui_helpers
from detail_helpers import CRASHED, DONE, FAILED, FOCAL, GPUS, T0, make_project
from rich.console import Console
from tui_helpers import settled, until

from engine.schema.events import RunState, apply_event, make_event
from mdtui.runs.store import RunStore
from mdtui.tui.app import MdtuiApp
from mdtui.tui.screens.compare import WIDE, CompareScreen, config_rows
from mdtui.tui.screens.help import HELP_WIDTH, KEYS_HELP, HelpScreen
from mdtui.tui.screens.main import MainScreen
from mdtui.tui.screens.results import ResultsScreen
from mdtui.tui.screens.run_detail import RunDetailScreen, cut_path, summary_text
from mdtui.tui.widgets.metric_chart import MetricChart
from mdtui.tui.widgets.run_log import RunLog, wrap_line

fake_world = tui_helpers.fake_world  # a fixture, used by name


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", GPUS)
    toml, _ = make_project(tmp_path)
    return toml


async def open_detail(pilot: Any, run_id: str) -> RunDetailScreen:
    await settled(pilot)
    pilot.app.open_run(run_id)
    screen = await until(pilot, lambda: isinstance(pilot.app.screen, RunDetailScreen) and pilot.app.screen)
    await pilot.pause(0.1)
    return screen  # type: ignore[return-value]


def run_dir(project: Path, run_id: str) -> Path:
    return Path(RunStore(project.parent / "runs").get(run_id).run_dir)


# ---------------------------------------------------------------------------------------- bug 3


async def test_a_failed_run_opens_on_summary_with_its_error_and_no_busy_bar(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, CRASHED)
        assert screen.query_one("#run-tabs").active == "summary"
        summary = str(screen.query_one("#summary-text").render())
        assert "No module named 'torchvision'" in summary
        # no epochs and no total: an indeterminate bar would animate as if busy; it is not shown at all
        assert not screen.query_one("#progress").display or screen.query_one("#progress").has_class("hidden")
        assert not screen.query_one("#progress").region.height
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        screen = await open_detail(pilot, FAILED)  # failed at epoch 2: a still bar at 1 of 3
        bar = screen.query_one("#progress")
        assert screen.query_one("#run-tabs").active == "summary"
        assert bar.total == 3 and bar.progress == 1
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        screen = await open_detail(pilot, DONE)  # a completed run opens on its charts
        assert screen.query_one("#run-tabs").active == "charts"


# ---------------------------------------------------------------------------------------- bug 4


async def test_charts_without_data_say_so_instead_of_drawing_axes(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, CRASHED)
        await pilot.press("left_square_bracket")  # Summary -> Charts
        await until(pilot, lambda: screen.query_one("#run-tabs").active == "charts")
        for chart in screen.query(MetricChart):
            assert not chart.has_data
            assert not chart.query_one("PlotextPlot").display
            assert str(chart.query_one(".empty").render()) == "no data yet"
            assert chart.query_one(".empty").region.height > 0


async def test_charts_keep_their_legend_off_the_plot_and_get_room_at_80x24(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_detail(pilot, DONE)
        loss = screen.query_one("#chart-loss", MetricChart)
        assert loss.has_data
        legend = str(loss.query_one(".legend").render())
        assert "train" in legend and "eval" in legend  # the legend is its own line, above the plot
        plot = loss.query_one("PlotextPlot")
        assert plot.region.y > loss.query_one(".legend").region.y
        assert plot.region.height >= 12  # not 4 rows: the step and lr charts give way at this size
        assert not screen.query_one("#chart-step").region.height
        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: screen.query_one("#chart-step").region.height > 0)


def test_eta_ticks_down_between_epochs() -> None:
    state = RunState()
    for event in (
        make_event("run_started", "r", t=T0, total_epochs=10),
        make_event("epoch", "r", t=T0 + 60, epoch=0, seconds=60.0),
    ):
        state = apply_event(state, event)
    assert state.eta_seconds() == 540  # without a clock: as at the end of the epoch
    assert state.eta_seconds(T0 + 60) == 540
    assert state.eta_seconds(T0 + 90) == 510  # half an epoch later: half an epoch less
    assert state.eta_seconds(T0 + 200) == 480  # a slow epoch stops at the epochs after it


def summary_record(*, status: str, devices: list[str]) -> Any:
    """The fields of a run record that the run detail's summary reads."""
    from types import SimpleNamespace

    return SimpleNamespace(
        run_id="r", experiment="e", status=status, devices=devices, seed=0, leaky=False, error=None, note=""
    )


def test_the_summary_eta_uses_the_clock() -> None:
    rec = summary_record(status="running", devices=["0"])

    state = RunState()
    for event in (
        make_event("run_started", "r", t=T0, total_epochs=10),
        make_event("epoch", "r", t=T0 + 60, epoch=0, seconds=60.0),
    ):
        state = apply_event(state, event)
    assert "ETA 9m00s" in summary_text(state, rec, now=T0 + 60)
    assert "ETA 8m30s" in summary_text(state, rec, now=T0 + 90)


def last_visible(log: RunLog) -> str:
    return log.lines[min(log.scroll_offset.y + log.scrollable_content_region.height, len(log.lines)) - 1]


async def test_the_log_keeps_following_when_lines_arrive_while_it_scrolls_to_the_end(project: Path) -> None:
    """The race behind "epoch 9 shown while the file had 11": Textual's Log follows only when the view
    is at the end at the moment a line is written. End scrolls there with an animation; lines that
    arrived meanwhile moved the end, the animation stopped short of it, and the log never followed
    again. Jumping to a problem (p) also switched following off for good, whatever key came next."""
    stdout = run_dir(project, DONE) / "stdout.log"
    lines = [f"line {i}\n" for i in range(60)]
    stdout.write_text("".join(lines[:10]) + "Traceback (most recent call last):\n" + "".join(lines[10:]))
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, DONE)
        await pilot.press("l")
        log = screen.query_one(RunLog)
        await until(pilot, lambda: len(log.lines) == 61 and log.max_scroll_y > 0)
        await pilot.press("home")
        log.action_scroll_end()  # what End does; the lines below arrive while it is under way
        await pilot.pause(0.1)
        with open(stdout, "a") as fh:
            fh.write("".join(f"epoch {i}\n" for i in range(1, 6)))
        screen.refresh_view()
        await pilot.pause(1.0)
        with open(stdout, "a") as fh:
            fh.write("".join(f"epoch {i}\n" for i in range(6, 12)))
        await until(pilot, lambda: log.lines[-1] == "epoch 11")
        await until(pilot, lambda: last_visible(log) == "epoch 11", timeout=10)  # it follows again
        await pilot.press("p")  # up to the Traceback; End follows again
        await until(pilot, lambda: log.scroll_offset.y < log.max_scroll_y)
        await pilot.press("end")
        with open(stdout, "a") as fh:
            fh.write("epoch 12\n")
        await until(pilot, lambda: log.lines[-1] == "epoch 12")
        await until(pilot, lambda: last_visible(log) == "epoch 12", timeout=10)


async def test_the_log_wraps_long_lines_and_scrolling_up_stops_following(project: Path) -> None:
    stdout = run_dir(project, DONE) / "stdout.log"
    stdout.write_text("".join(f"line {i}\n" for i in range(60)))
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, DONE)
        await pilot.press("l")
        log = screen.query_one(RunLog)
        await until(pilot, lambda: log.file_lines == 60 and log.max_scroll_y > 0)
        with open(stdout, "a") as fh:
            fh.write("x" * 300 + " the end of a very long line\n")
            fh.write("".join(f"epoch {i}\n" for i in range(1, 12)))
        await until(pilot, lambda: log.file_lines == 72)
        await until(pilot, lambda: last_visible(log) == "epoch 11", timeout=10)
        assert all(len(row) <= log.scrollable_content_region.width for row in log.lines)  # wrapped, not cut
        assert any(row.endswith("the end of a very long line") for row in log.lines)
        assert not log.show_horizontal_scrollbar
        assert "following" in str(screen.query_one("#log-source").render())
        # scrolling up stops following; new lines do not pull the reader away; G follows again
        await pilot.press("k", "k")
        top = log.scroll_offset.y
        with open(stdout, "a") as fh:
            fh.write("epoch 12\n")
        await until(pilot, lambda: log.file_lines == 73)
        assert log.scroll_offset.y == top and not log.following
        assert "scrolled up" in str(screen.query_one("#log-source").render())
        await pilot.press("G")
        await until(pilot, lambda: log.following and last_visible(log) == "epoch 12")


def test_wrap_line_breaks_between_words_and_cuts_only_overlong_words() -> None:
    assert wrap_line("short", 10) == ["short"]
    assert wrap_line("aaa bbb ccc ddd", 8) == ["aaa bbb", "ccc ddd"]
    assert wrap_line("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    rows = wrap_line("File '/very/long/path/to/module.py', line 12, in forward", 20)
    assert all(len(r) <= 20 for r in rows) and "".join(rows).replace(" ", "") == (
        "File '/very/long/path/to/module.py', line 12, in forward".replace(" ", "")
    )


async def test_the_log_tab_says_which_stream_it_shows_and_t_switches(project: Path) -> None:
    (run_dir(project, FAILED) / "stderr.log").write_text(
        "Traceback (most recent call last):\nValueError: x\n"
    )
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, FAILED)
        tabs = screen.query_one("#run-tabs")
        await pilot.press("l")
        assert "stdout" in str(tabs.get_tab("log").label)
        assert "stdout.log" in str(screen.query_one("#log-source").render())
        assert isinstance(app.focused, RunLog)  # the keys scroll the log
        await pilot.press("t")
        assert "stderr" in str(tabs.get_tab("log").label)
        source = str(screen.query_one("#log-source").render())
        assert "stderr.log" in source and "t: stdout.log" in source
        await until(pilot, lambda: screen.query_one(RunLog).file_lines == 2)


# ---------------------------------------------------------------------------------------- 80x24


async def test_artifacts_show_paths_relative_to_the_run_dir_keeping_the_file_name(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_detail(pilot, DONE)
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        table = screen.query_one("#artifact-table")
        await until(pilot, lambda: table.row_count == 2)
        paths = [str(table.get_cell_at((row, 1))) for row in range(2)]
        assert paths[1] == "doctor/channel_mask_layer3.npz"
        assert str(project.parent) not in paths[0]
        assert paths[0].endswith("/confusion_matrix_best_epoch.png") and paths[0].startswith("plots/")
        # the whole row fits the screen: no column runs off its right edge
        assert sum(col.get_render_width(table) for col in table.columns.values()) <= table.size.width


def test_cut_path_keeps_the_file_name() -> None:
    assert cut_path("plots/per-class/confusion.png", 100) == "plots/per-class/confusion.png"
    cut = cut_path("plots/per-class/confusion.png", 20)
    assert len(cut) <= 20 and cut.endswith("/confusion.png") and "…" in cut
    assert cut_path("a_very_long_file_name_without_folders.png", 12).endswith("folders.png")


def test_help_lines_fit_80_columns() -> None:
    for line in KEYS_HELP.splitlines():
        text = re.sub(r"\[/?b\]", "", line)
        assert len(text) <= HELP_WIDTH, line


async def test_help_does_not_wrap_and_scrolls_with_j_k_g_G_at_80x24(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        await pilot.press("question_mark")
        screen = await until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen)
        await pilot.pause(0.1)
        text = screen.query_one("#help-text")
        assert text.region.height == len(KEYS_HELP.splitlines())  # one screen row per line: nothing wrapped
        scroll = screen.query_one("#dialog")
        assert app.focused is scroll and scroll.max_scroll_y > 0
        await pilot.press("j")
        await until(pilot, lambda: scroll.scroll_y == 1)
        await pilot.press("G")
        await until(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y)
        await pilot.press("g")
        await until(pilot, lambda: scroll.scroll_y == 0)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


# ---------------------------------------------------------------------------------------- conventions


async def test_j_k_g_G_scroll_the_config_and_q_goes_back(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_detail(pilot, DONE)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: screen.query_one("#run-tabs").active == "config")
        scroll = screen.query_one("#config-scroll")
        assert app.focused is scroll
        await until(pilot, lambda: scroll.max_scroll_y > 0)
        await pilot.press("j", "j")
        await until(pilot, lambda: scroll.scroll_y == 2)
        await pilot.press("k")
        await until(pilot, lambda: scroll.scroll_y == 1)
        await pilot.press("end")
        await until(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y)
        await pilot.press("g")
        await until(pilot, lambda: scroll.scroll_y == 0)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


# ---------------------------------------------------------------------------------------- compare


def test_compare_rows_fold_a_block_one_run_lacks_and_a_shows_every_key() -> None:
    flats = [
        {"loss.name": "ce", "epochs": 3, "seed": 0, "doctor": None},
        {"loss.name": "fl", "epochs": 3, "seed": 0, **{f"doctor.k{i}": i for i in range(20)}},
    ]
    rows = config_rows(flats)
    assert [key for key, _, _ in rows] == ["doctor.*", "loss.name"]
    assert rows[0][1] == ["(unset)", "20 keys"]
    every = config_rows(flats, show_all=True)
    assert len(every) == 24 and ("epochs", ["3", "3"], False) in every


async def test_compare_fits_100_columns_shows_only_differences_and_scrolls(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        await settled(pilot)
        app.post_message(_compare([DONE, FOCAL, FAILED]))
        screen = await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen)
        await pilot.pause(0.2)
        diff = screen.query_one("#cmp-table")
        text = _render(screen.table, diff.content_region.width)
        assert all(len(line) <= diff.content_region.width for line in text.splitlines())
        for run_id in (DONE, FOCAL, FAILED):  # every run's column is on screen, its id whole
            assert run_id in text
        assert "doctor.*" in text and "doctor.knob_05" not in text  # one row for the block
        keys = [line.split()[0] for line in text.splitlines() if line.strip()]
        assert [k for k in keys if k.startswith("doctor")] == ["doctor.*"]  # not `doctor None` + 21 rows
        assert "loss.name" in text and "fl" in text
        scroll = screen.query_one("#diff-scroll")
        assert app.focused is scroll
        await pilot.press("a")  # every key: now it scrolls
        await until(pilot, lambda: "doctor.knob_05" in _render(screen.table, diff.content_region.width))
        await until(pilot, lambda: scroll.max_scroll_y > 0)
        await pilot.press("j", "j", "j")
        await until(pilot, lambda: scroll.scroll_y == 3)
        await pilot.press("k")
        await until(pilot, lambda: scroll.scroll_y == 2)
        await pilot.press("G")
        await until(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_compare_draws_its_charts_without_waiting_for_the_app_refresh(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table and both charts come with the screen's first layout: the charts said "no data yet"
    for finished runs until the app's next periodic refresh (a snapshot test caught it under load)."""
    from mdtui.tui import app as app_module

    monkeypatch.setattr(app_module, "REFRESH_SECONDS", 3600.0)  # the refresh at start, then none
    app = MdtuiApp(project)
    async with app.run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        app.post_message(_compare([DONE, FOCAL]))
        screen = await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen)
        await until(pilot, lambda: screen.table is not None)
        acc, loss = screen.query_one("#cmp-acc1", MetricChart), screen.query_one("#cmp-loss", MetricChart)
        assert acc.has_data and loss.has_data
        assert screen.size.width >= WIDE
        assert set(acc._series) == {screen.labels[DONE], screen.labels[FOCAL]}  # the wide legend


def _compare(run_ids: list[str]) -> Any:
    from mdtui.tui.messages import CompareRequested

    return CompareRequested(run_ids)


def _render(renderable: Any, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.export_text()


# ---------------------------------------------------------------------------------------- results


async def test_R_shows_RESULTS_md_and_the_report_rendered(project: Path) -> None:
    (project.parent / "RESULTS.md").write_text("# Results\n\n## demo\n\n- `tiny` acc1 **70.00** on seed 0\n")
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        await settled(pilot)
        await pilot.press("R")
        screen = await until(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen)
        await until(pilot, lambda: screen.loaded >= 1)
        await pilot.pause(0.2)
        log = screen.query_one("#results-log-md")
        assert "70.00" in log.source and "demo" in log.source
        report = screen.query_one("#report-md").source
        assert "tiny" in report and "70.00" in report  # the report's table of the completed runs
        assert app.focused is screen.query_one("#results-log-scroll")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: screen.query_one("#results-tabs").active == "report")
        (project.parent / "RESULTS.md").write_text("# Results\n\nrewritten\n")
        await pilot.press("r")
        await until(pilot, lambda: "rewritten" in screen.query_one("#results-log-md").source)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


def test_a_refresh_before_the_screen_is_mounted_is_ignored(project: Path) -> None:
    """The app's timer can reach a pushed screen before its widgets exist (it showed as a "gather
    failed: No nodes match '#chart-loss'" notification, and artifact rows added before their columns)."""
    from mdtui.views.dashboard import Dashboard

    dashboard = Dashboard(project)
    RunDetailScreen(DONE, dashboard).refresh_view()
    CompareScreen([DONE, FOCAL], dashboard).refresh_view()


# ---------------------------------------------------------------------------------------- issue 20


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> float:
    """The run detail reads the wall clock for ETAs and elapsed times: fixed here."""
    import time
    import types

    from detail_helpers import NOW

    from mdtui.tui.screens import run_detail

    monkeypatch.setattr(run_detail, "time", types.SimpleNamespace(time=lambda: NOW, monotonic=time.monotonic))
    return NOW


@pytest.fixture
def live_project(project: Path, frozen_clock: float) -> Path:
    from detail_helpers import write_live_runs

    from mdtui.registry.plan import load_plan

    write_live_runs(RunStore(project.parent / "runs"), load_plan(project))
    return project


async def test_an_epoch_under_way_shows_its_steps_loss_and_eta_at_80x24(live_project: Path) -> None:
    from detail_helpers import LIVE

    app = MdtuiApp(live_project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_detail(pilot, LIVE)
        line = str(screen.query_one("#step-line").render())
        # 15 steps in 15 s: 82 steps left, 1 s each; 3 more epochs of 97 s
        assert line == "epoch 1/4 · step 15/97 · loss 1.3600 · epoch ends in 1m22s · run ETA 6m13s"
        assert screen.query_one("#step-line").region.height == 1
        assert screen.query_one("#progress").percentage > 0  # 15/97 of the first of 4 epochs
        loss = screen.query_one("#chart-loss", MetricChart)
        assert loss.has_data  # the steps, not "no data yet"


async def test_a_resumed_run_shows_its_new_session(live_project: Path) -> None:
    """Two sessions in one events file: the epochs of the first, the steps of the second."""
    from detail_helpers import RESUMED

    app = MdtuiApp(live_project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_detail(pilot, RESUMED)
        line = str(screen.query_one("#step-line").render())
        assert line.startswith("epoch 3/4 · step 10/20 · loss 0.8000")
        assert screen.query_one("#progress").progress == pytest.approx(2.5)


async def test_a_plain_runs_files_are_on_the_artifacts_tab(project: Path) -> None:
    from detail_helpers import write_plain_files

    write_plain_files(run_dir(project, DONE))
    app = MdtuiApp(project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_detail(pilot, DONE)
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        table = screen.query_one("#artifact-table")
        await until(pilot, lambda: table.row_count == 7)
        rows = {str(table.get_cell_at((r, 1))): str(table.get_cell_at((r, 2))) for r in range(7)}
        assert {"artifacts/curves.png", "artifacts/per_class.png", "artifacts/confusion_matrix.json"} <= set(
            rows
        )
        assert rows["checkpoints/last.pt"].endswith("· epoch 3") and rows["checkpoints/best.pt"]
        assert str(table.get_cell_at((0, 0))) == "confusion"  # announced artifacts first, then the files


async def test_summary_elapsed_is_the_wall_time_status_shows(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, DONE)
        summary = str(screen.query_one("#summary-text").render())
        assert "elapsed 3m00s" in summary  # started_t to ended_t, as `mdtui status` counts
        assert "training time 3m00s" in summary and " time 3m00s," not in summary.replace("training time", "")


async def test_the_selection_ends_with_the_action_that_took_it(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        await settled(pilot)
        await pilot.press("2", "space", "space")
        table = app.screen.query_one("#run-table")
        assert len(table.selected) == 2
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        assert table.selected == set()  # the next key acts on the row under the cursor


def test_a_reason_that_says_waiting_is_not_prefixed_again() -> None:
    rec = summary_record(status="queued", devices=[])

    text = summary_text(RunState(), rec, "waiting for 1 device (0: reserved by r2)")
    assert "waiting for 1 device" in text and "waiting: waiting" not in text


async def test_a_queued_run_opens_on_summary_and_says_the_queue_is_paused(project: Path) -> None:
    from mdtui.registry.plan import load_plan
    from mdtui.scheduling import scheduler

    store = RunStore(project.parent / "runs", experiments_file=project)
    scheduler.pause(store)
    (queued,) = scheduler.enqueue(store, load_plan(project), ["tiny-focal"])
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: queued.run_id in {r.run_id for r in app.snapshot.runs})
        screen = await open_detail(pilot, queued.run_id)
        assert screen.query_one("#run-tabs").active == "summary"
        await until(pilot, lambda: "the queue is paused" in str(screen.query_one("#summary-text").render()))
        assert screen.query_one("#progress").has_class("hidden")  # not "0 %": it has not begun


def test_the_summary_line_reads_as_words_not_python() -> None:
    from mdtui.tui.screens.run_detail import summary_fields

    line = summary_fields({"best_acc1": 61.5, "selected_on": "test", "leaky": False, "seconds": 31.0})
    assert line == "best_acc1 61.50, best epoch chosen on the test split, training time 0m31s"


async def test_a_one_epoch_chart_says_its_values_instead_of_a_lone_dot(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, FAILED)  # one epoch: train loss 2.0, eval loss 2.2
        chart = screen.query_one("#chart-loss", MetricChart)
        assert str(chart.query_one(".empty").render()) == "epoch 1: train 2  eval 2.2"


async def test_an_open_detail_follows_the_runs_new_attempt(project: Path) -> None:
    """The run failed at start; a new attempt (resumed from a shell, or requeued) runs it to the end:
    the open detail shows that attempt, not the frozen first one."""
    from detail_helpers import epoch_events

    from engine.schema.events import encode

    app = MdtuiApp(project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_detail(pilot, CRASHED)
        assert not screen.query_one("#progress").percentage
        store = RunStore(project.parent / "runs")
        events = [make_event("run_started", CRASHED, t=T0 + 9500, total_epochs=3, steps_per_epoch=4)]
        events += epoch_events(CRASHED, [50.0, 60.0, 70.0], T0 + 9500)
        events.append(make_event("run_finished", CRASHED, t=T0 + 9700, status="completed", summary={}))
        with (run_dir(project, CRASHED) / "events.jsonl").open("a") as fh:
            fh.write("".join(encode(e) + "\n" for e in events))
        store.update(CRASHED, status="completed", error=None, total_epochs=3, epochs_done=3)
        await until(pilot, lambda: screen.query_one("#chart-acc1", MetricChart).has_data)  # from its events
        assert screen.query_one("#progress").percentage == 1.0 and "completed" in screen.sub_title
        assert "best acc1 70.00" in str(screen.query_one("#summary-text").render())


def test_an_eta_under_a_second_reads_soon() -> None:
    from mdtui.tui.widgets.cells import fmt_eta

    assert (fmt_eta(None), fmt_eta(0.2), fmt_eta(61)) == ("", "soon", "1m01s")


def test_many_medium_few_only_for_a_long_tail() -> None:
    rec = summary_record(status="completed", devices=[])

    def last_eval(**shots: float) -> str:
        state = apply_event(RunState(), make_event("epoch", "r", epoch=0, eval={"acc1": 50.0, **shots}))
        return next(line for line in summary_text(state, rec).splitlines() if line.startswith("last eval"))

    assert last_eval(many=50.0) == "last eval: acc1 50.00"  # balanced: one group, acc1 again
    assert last_eval(many=70.0, few=20.0) == "last eval: acc1 50.00  many 70.00  few 20.00"
