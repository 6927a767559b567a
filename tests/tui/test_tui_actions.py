"""Pilot tests of the TUI's actions: launch, device picking, queueing, stopping, filter, sort, re-attach."""

from __future__ import annotations

import json
from pathlib import Path

import tui_helpers
from tui_helpers import SIZE, runs_of, until, write_toml

from mdtui.runs.store import RunStore
from mdtui.system.processes import process_alive
from mdtui.tui.app import MdtuiApp
from mdtui.tui.screens.confirm import ConfirmDialog
from mdtui.tui.screens.device_picker import DevicePickerDialog
from mdtui.tui.screens.help import KEYS_HELP, HelpScreen
from mdtui.tui.screens.main import MainScreen
from mdtui.tui.screens.run_detail import RunDetailScreen
from mdtui.tui.widgets.experiment_table import ExperimentTable
from mdtui.tui.widgets.gpu_panel import GpuPanel
from mdtui.tui.widgets.run_log import RunLog
from mdtui.tui.widgets.run_table import RunTable

FULL_GPU = json.dumps(
    [
        {
            "name": "Busy GPU",
            "memory_total_mb": 24576,
            "memory_used_mb": 24000,
            "utilization": 99,
            "processes": [{"pid": 4242, "owner": "alice", "memory_mb": 24000, "name": "python"}],
        }
    ]
)

fake_world = tui_helpers.fake_world  # a fixture, used by name
project = tui_helpers.project  # a fixture, used by name


def cell(table: ExperimentTable | RunTable, row: str, column: str) -> str:
    return table.get_cell(row, column).plain.strip()


async def test_r_runs_the_experiment_under_the_cursor_on_a_free_gpu(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        await pilot.press("r")
        done = await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "completed"], 30)
        assert done[0].experiment == "tiny" and done[0].devices == "0"
        table = app.screen.query_one(ExperimentTable)
        await until(pilot, lambda: cell(table, "tiny", "status") == "completed")
        assert cell(table, "tiny", "best") == "70.00"  # the fake engine's best eval acc1


async def test_g_runs_on_the_device_chosen_in_the_picker(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.devices)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DevicePickerDialog))
        await pilot.press("down", "space", "enter")  # device 1 only
        runs = await until(pilot, lambda: list(app.snapshot.runs), 30)
        assert runs[0].devices == "1"
        assert not isinstance(app.screen, DevicePickerDialog)


async def test_runs_queue_when_every_gpu_is_busy_and_x_cancels(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("MDTUI_FAKE_GPUS", FULL_GPU)
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.devices)
        panel = app.screen.query_one(GpuPanel)
        await until(pilot, lambda: panel.rows)
        assert "alice" in " ".join(str(c) for c in panel.rows[0])  # the foreign owner is shown
        await pilot.press("r")
        await until(pilot, lambda: [r for r in app.snapshot.runs if r.queue_pos], 20)
        await pilot.press("r")  # tiny is queued already: the app asks before queueing it twice
        dialog = await until(pilot, lambda: isinstance(app.screen, ConfirmDialog) and app.screen)
        assert "already has a run queued" in dialog.question
        await pilot.press("y")
        await until(pilot, lambda: len([r for r in app.snapshot.runs if r.queue_pos]) == 2)
        queued = sorted((r for r in app.snapshot.runs if r.queue_pos), key=lambda r: r.queue_pos)
        assert [r.status for r in queued] == ["queued", "queued"]
        first, second = queued[0].run_id, queued[1].run_id

        await pilot.press("2", "j")  # Runs tab: the queue in its order; j goes to queued #2
        table = app.screen.query_one(RunTable)
        await until(pilot, lambda: table.current_key() == second)
        await pilot.press("left_square_bracket")  # move it up the queue
        await until(pilot, lambda: runs_of(app)[second].queue_pos == 1)
        assert runs_of(app)[first].queue_pos == 2

        await until(pilot, lambda: table.current_key() == second)
        await pilot.press("x")
        await until(pilot, lambda: runs_of(app)[second].status == "cancelled")
        assert runs_of(app)[first].status == "queued"


async def test_K_stops_with_sigkill_after_the_grace_period(tmp_path: Path, monkeypatch) -> None:
    from tui_helpers import kill_everything

    toml = write_toml(tmp_path, "stop_grace_seconds = 0.5\n")
    toml.write_text(toml.read_text().replace("stop_grace_seconds = 10\n", ""))
    monkeypatch.setenv("FAKE_IGNORE_TERM", "1")
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "30")
    app = MdtuiApp(toml)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot.experiments)
            await pilot.press("r")
            store = RunStore(tmp_path / "runs")
            rec = await until(
                pilot, lambda: [r for r in store.list_runs() if r.status == "running" and r.pid], 30
            )
            rec = rec[0]
            await until(pilot, lambda: runs_of(app).get(rec.run_id))
            await pilot.press("2")
            await until(pilot, lambda: app.screen.query_one(RunTable).current_key() == rec.run_id)
            await pilot.press("K")
            dialog = await until(pilot, lambda: isinstance(app.screen, ConfirmDialog) and app.screen)
            assert rec.run_id in "\n".join(dialog.details)  # the confirmation lists the run
            await pilot.press("y")
            await until(pilot, lambda: runs_of(app)[rec.run_id].status == "stopped", 30)
        assert not process_alive(rec.pid, rec.proc_start)
        exit_info = json.loads((Path(rec.run_dir) / "exit.json").read_text())
        assert exit_info["status"] == "stopped" and "SIGKILL" in (exit_info["error"] or "")
    finally:
        kill_everything(tmp_path / "runs")


async def test_filter_sort_and_escape(project: Path) -> None:
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(ExperimentTable)
        await until(pilot, lambda: table.keys() == ["tiny", "tiny-focal"])
        await pilot.press("slash", *"focal", "enter")
        await until(pilot, lambda: table.keys() == ["tiny-focal"])
        assert table.has_focus  # enter hands the keys back to the table
        await pilot.press("escape")
        await until(pilot, lambda: table.keys() == ["tiny", "tiny-focal"])
        await pilot.press("s")  # by name
        await pilot.press("S")  # reversed
        await until(pilot, lambda: table.keys() == ["tiny-focal", "tiny"])
        await pilot.press("space")
        assert table.selected == {"tiny-focal"}
        await pilot.press("escape")
        assert table.selected == set()


async def test_reattach_after_restart_shows_finished_and_lost_runs(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.6")
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        await pilot.press("r")
        live = await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "running"], 30)
        await pilot.press("q")
    assert "1 run keeps running" in app.return_value
    run_id = live[0].run_id
    store = RunStore(project.parent / "runs")
    # a run whose supervisor vanished: "running" in the index, nobody alive, no exit.json
    ghost = store.create_run(
        __import__("mdtui.registry.plan", fromlist=["load_plan"]).load_plan(project).experiments["tiny"],
        {"epochs": 3},
        seed=0,
        devices=["1"],
        status="running",
    )
    store.update(ghost.run_id, supervisor_pid=2**22 + 17, supervisor_start=1.0, started_t=1.0)

    again = MdtuiApp(project)
    async with again.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: runs_of(again).get(run_id), 10)
        assert runs_of(again)[run_id].status in ("running", "completed")  # still streaming or done
        await until(pilot, lambda: runs_of(again)[run_id].status == "completed", 30)
        assert runs_of(again)[run_id].best == 70.0
        await until(pilot, lambda: runs_of(again)[ghost.run_id].status == "lost")


async def test_broken_experiments_toml_is_shown_in_place_and_e_reloads_it(
    tmp_path: Path, monkeypatch
) -> None:
    toml = write_toml(tmp_path)
    good = toml.read_text()
    toml.write_text(good.replace('loss = "ce"', 'loss = "cee"'))
    fixer = tmp_path / "fix.py"
    fixer.write_text(f"import sys, pathlib\npathlib.Path(sys.argv[1]).write_text({good!r})\n")
    monkeypatch.setenv("EDITOR", f"{__import__('sys').executable} {fixer}")
    monkeypatch.delenv("VISUAL", raising=False)
    app = MdtuiApp(toml)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.screen.query_one("#plan-error")
        await until(pilot, lambda: banner.display)
        text = str(banner.render())
        assert 'unknown loss "cee"' in text and "experiments.toml:" in text
        await pilot.press("r")  # greyed out: nothing starts, nothing crashes
        await pilot.press("e")
        await until(pilot, lambda: not banner.display)
        await until(pilot, lambda: app.screen.query_one(ExperimentTable).keys() == ["tiny", "tiny-focal"])
    assert not (tmp_path / "runs").exists() or not RunStore(tmp_path / "runs").list_runs()


async def test_run_detail_log_jumps_to_the_first_traceback(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_FAIL_AT", "1")
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        await pilot.press("r")
        failed = await until(pilot, lambda: [r for r in app.snapshot.runs if r.status == "failed"], 30)
        run_dir = RunStore(project.parent / "runs").get(failed[0].run_id).run_dir
        with open(Path(run_dir) / "stderr.log", "a") as fh:
            fh.write("Traceback (most recent call last):\n  File 'x.py'\nRuntimeError: boom\n")
        await pilot.press("enter")  # the experiment's latest run
        screen = await until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen)
        assert screen.run_id == failed[0].run_id
        await pilot.press("p")  # none in stdout: switches to stderr.log and scrolls there
        log = screen.query_one(RunLog)
        await until(pilot, lambda: screen.stream == "stderr" and log.problem_line is not None)
        assert "Traceback" in log.lines[log.problem_line]
        await pilot.press("t")
        assert screen.stream == "stdout"
        await pilot.press("right_square_bracket")
        assert screen.query_one("#run-tabs").active == "charts"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_help_lists_every_bound_key_and_palette_opens(project: Path) -> None:
    import re

    names = {"slash": "/", "left_square_bracket": "[", "right_square_bracket": "]", "question_mark": "?"}
    for binding in MainScreen.BINDINGS + RunDetailScreen.BINDINGS:
        for key in binding.key.split(","):
            key = names.get(key, key)
            assert re.search(rf"(^|\s){re.escape(key)}(\s|$)", KEYS_HELP, re.M), key
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
        await pilot.press("escape")


def test_quit_message_counts_running_and_queued() -> None:
    from mdtui.tui.app import farewell
    from mdtui.views.dashboard import RunRow, Snapshot

    def row(status: str) -> RunRow:
        return RunRow("x", "e", status, "", "", None, None, None, None, None, None, None)

    assert farewell(Snapshot(runs=(row("running"), row("queued")), live_count=1)) == (
        "mdtui: 1 run keeps running in the background and 1 queued run waits for the scheduler;"
        " run `mdtui` to look again."
    )
    assert farewell(Snapshot()) == "mdtui: 0 runs keep running in the background."
    # a paused queue starts nothing: the queued run does not wait "for the scheduler"
    assert farewell(Snapshot(runs=(row("queued"),), queue_paused=True)) == (
        "mdtui: 0 runs keep running in the background and 1 queued run waits in a paused queue;"
        " `mdtui queue resume` (or P in mdtui) starts them."
    )


async def test_a_snapshot_before_the_main_screen_mounts_is_shown_once_it_does(tmp_path: Path) -> None:
    """The first refresh may finish before MainScreen is mounted ("No nodes match 'ExperimentTable'")."""
    from mdtui.tui.app import MdtuiApp
    from mdtui.tui.screens.main import MainScreen
    from mdtui.views.dashboard import ExperimentRow, Snapshot

    app = MdtuiApp(write_toml(tmp_path))
    app.refresh_now = lambda **_: None  # type: ignore[method-assign]  # only the snapshot below
    async with app.run_test(size=SIZE) as pilot:
        screen = MainScreen()
        app.push_screen(screen)  # not awaited: compose and mount are still to come
        row = ExperimentRow("early", "g", "m", "d", "ce", "", "", None, (), None)
        app._apply(Snapshot(experiments=(row,)))
        await until(pilot, lambda: screen.ready)
        await pilot.pause()
        assert [r.name for r in screen.snapshot.experiments] == ["early"]


def test_runs_columns_at_80_and_100_keep_eta_and_device_before_widening_the_name() -> None:
    """80 columns: ETA and device come in while the name keeps a readable width; 100: loss too."""
    from mdtui.tui.widgets.cells import fit_columns

    content = {
        "status": len("running"),
        "experiment": 38,
        "epoch": len("12/200"),
        "acc1": 5,
        "best": 5,
        "device": 2,
    }
    for width, optional in ((79, {"eta", "device"}), (99, {"eta", "device", "loss"})):
        shown = {c.key: w for c, w in fit_columns(RunTable.COLUMNS, width, content)}
        assert sum(shown.values()) <= width
        assert {"id", "status", "experiment", "epoch", "acc1", "best"} | optional <= set(shown), width
        assert shown["experiment"] >= 16
    # a stopping run widens the status column to fit "stopping (30s)" instead of cutting it
    stopping = {c.key: w for c, w in fit_columns(RunTable.COLUMNS, 79, {**content, "status": 14})}
    assert stopping["status"] >= 15


def test_knobs_use_the_width_there_is_at_200_columns() -> None:
    from mdtui.tui.widgets.cells import fit_columns

    content = {"name": 40, "knobs": 120, "status": 9, "loss": 4, "model": 8, "data": 12, "group": 10}
    shown = {c.key: w for c, w in fit_columns(ExperimentTable.COLUMNS, 199, content)}
    assert shown["name"] == 41  # the whole name
    assert shown["knobs"] > 60  # not capped at ~30: what the other columns leave
    assert sum(shown.values()) <= 199


async def test_P_pauses_and_resumes_the_queue(project: Path) -> None:
    from mdtui.scheduling import scheduler

    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        store = app.dashboard.store
        await pilot.press("P")
        await until(pilot, lambda: scheduler.is_paused(store) and app.snapshot.queue_paused)
        assert "queue paused" in app.screen.sub_title
        await pilot.press("P")
        await until(pilot, lambda: not scheduler.is_paused(store) and not app.snapshot.queue_paused)


# ---------------------------------------------------------------------------------------------- issue 20


async def test_palette_matches_every_word_anywhere_and_offers_groups_queueing_and_one_pause_verb(
    project: Path,
) -> None:
    from mdtui.tui.palette import ExperimentCommands

    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot.experiments)
        provider = ExperimentCommands(app.screen)

        async def titles(query: str) -> list[str]:
            return [str(hit.text) for hit in [h async for h in provider.search(query)]]

        assert "Run tiny-focal" in await titles("demo focal")  # the group is in the description
        assert "Run tiny-focal" in await titles("focal run")  # words in any order
        assert await titles("focal nosuchword") == []
        assert {"Run group demo", "Queue group demo", "Queue tiny"} <= set(await titles("demo"))
        verbs = [c.title for c in app.get_system_commands(app.screen)]
        assert "Pause the queue" in verbs and "Resume the queue" not in verbs


async def test_u_resumes_only_what_the_cli_would_and_says_why_not(project: Path) -> None:
    """A stopped run without last.pt is refused with the CLI's reason; a completed run is no candidate."""
    store = RunStore(project.parent / "runs", experiments_file=project)
    from mdtui.registry.plan import engine_config, load_plan

    plan = load_plan(project)
    exp = plan.experiments["tiny"]
    stopped = store.create_run(
        exp, engine_config(plan, exp, run_id=None, seed=0), seed=0, devices=["cpu"], status="stopped"
    )
    app = MdtuiApp(project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: stopped.run_id in runs_of(app))
        await pilot.press("2")
        table = app.screen.query_one(RunTable)
        await until(pilot, lambda: stopped.run_id in table.keys())  # noqa: SIM118
        await pilot.press("u")
        await until(
            pilot,
            lambda: any("cannot resume" in n.message and "last.pt" in n.message for n in app._notifications),
        )
        store.update(stopped.run_id, status="completed")
        await until(pilot, lambda: runs_of(app)[stopped.run_id].status == "completed")
        await pilot.press("u")
        await until(
            pilot, lambda: any("No stopped, failed or lost run" in n.message for n in app._notifications)
        )
