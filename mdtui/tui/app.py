"""The mdtui Textual app: a view over experiments.toml, the run store, the queue and the devices.

Nothing here owns a run. Runs belong to their detached supervisors and the queue to the scheduler,
so quitting, losing SSH or a crash of this app never touches them; on start the app simply reads
the index and the runs' event files again (re-attaching is just reading).

Refreshes are paced: one worker thread gathers a snapshot (index, queue, appended event bytes) a few
times per second and the UI applies it in one batch; device queries run at a slower pace.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SuspendNotSupported, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from mdtui.tui.screens.compare import CompareScreen
from mdtui.tui.screens.confirm import ConfirmDialog
from mdtui.tui.screens.device_picker import DevicePickerDialog
from mdtui.tui.screens.help import HelpScreen
from mdtui.tui.screens.main import MainScreen
from mdtui.tui.screens.run_detail import RunDetailScreen
from mdtui.views.dashboard import Dashboard, Snapshot

REFRESH_SECONDS = 0.4
DEVICE_REFRESH_SECONDS = 2.0


class MdtuiApp(App[str]):
    """Returns what keeps running after it quits, as a sentence for the terminal."""

    CSS_PATH = "app.tcss"
    TITLE = "mdtui"
    BINDINGS = [
        Binding("q", "quit_app", "Quit", id="app.quit", tooltip="Quit; runs and the queue keep going"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("ctrl+q", "quit_app", "Quit", show=False, id="app.ctrlq"),
    ]

    def __init__(self, plan_path: Path | None = None, *, dashboard: Dashboard | None = None) -> None:
        super().__init__()
        self.dashboard = dashboard or Dashboard(plan_path)
        self.snapshot = Snapshot()
        self._devices: tuple[Any, ...] = ()
        self._devices_t = 0.0
        self._refreshing = False

    def on_mount(self) -> None:
        path = getattr(self.dashboard.plan, "settings", None)
        self.sub_title = str(path.path) if path is not None else str(self.dashboard.plan_path or "")
        self.push_screen(MainScreen())
        self.refresh_now()
        self.set_interval(REFRESH_SECONDS, self.refresh_now)
        from mdtui.system.processes import LOGOUT_WARNING, logout_kills_processes

        if logout_kills_processes():
            self.notify(LOGOUT_WARNING, severity="warning", timeout=15)

    # ------------------------------------------------------------------ refresh loop

    def refresh_now(self, *, changed: bool = False) -> None:
        """Gather a new snapshot now; ``changed``: we just changed something, skip the caches."""
        if changed:
            self.dashboard.invalidate()
        if not self._refreshing:
            self._refreshing = True
            self._gather()

    @work(thread=True, exclusive=True, group="refresh", exit_on_error=False)
    def _gather(self) -> None:
        try:
            now = time.monotonic()
            with_devices = now - self._devices_t >= DEVICE_REFRESH_SECONDS or not self._devices
            snapshot = self.dashboard.refresh(with_devices=with_devices)
            if with_devices:
                self._devices, self._devices_t = snapshot.devices, now
            else:
                snapshot = Snapshot(**{**snapshot.__dict__, "devices": self._devices})
            self.call_from_thread(self._apply, snapshot)
        finally:
            self._refreshing = False

    def _apply(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        with self.batch_update():
            for screen in self.screen_stack:
                if isinstance(screen, MainScreen):
                    screen.show(snapshot)
            if isinstance(self.screen, (RunDetailScreen, CompareScreen)):
                self.screen.refresh_view()

    # ------------------------------------------------------------------ navigation

    def open_run(self, run_id: str, tab: str = "charts") -> None:
        self.push_screen(RunDetailScreen(run_id, tab=tab))

    def open_compare(self, run_ids: list[str]) -> None:
        self.push_screen(CompareScreen(run_ids))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # ------------------------------------------------------------------ run control

    def start(self, names: list[str], devices: list[str] | None = None) -> None:
        self._start(names, devices)

    @work(thread=True, group="control", exit_on_error=False)
    def _start(self, names: list[str], devices: list[str] | None) -> None:
        started, queued, errors = self.dashboard.start_now(names, devices)
        message = []
        if started:
            message.append(f"started {len(started)}: {', '.join(started)}")
        if queued:
            message.append(f"queued (devices busy or upstream pending): {', '.join(queued)}")
        if message:
            self.call_from_thread(self.notify, "; ".join(message))
        for error in errors:
            self.call_from_thread(self.notify, error, severity="error", timeout=8)
        self.call_from_thread(partial(self.refresh_now, changed=True))

    def enqueue(self, names: list[str], devices: list[str] | None = None) -> None:
        self._enqueue(names, devices)

    @work(thread=True, group="control", exit_on_error=False)
    def _enqueue(self, names: list[str], devices: list[str] | None) -> None:
        errors = self.dashboard.enqueue(names, devices)
        for error in errors:
            self.call_from_thread(self.notify, error, severity="error", timeout=8)
        if not errors:
            self.call_from_thread(self.notify, f"queued: {', '.join(names)}")
        self.call_from_thread(partial(self.refresh_now, changed=True))

    def pick_devices_and_start(self, names: list[str]) -> None:
        def chosen(devices: list[str] | None) -> None:
            if devices:
                self.start(names, devices)

        self.push_screen(DevicePickerDialog(self._devices, self.snapshot.holders, names), chosen)

    def confirm_stop(self, rows: Iterable[Any]) -> None:
        """Ask before stopping: list each run with its pid and devices, say how the stop escalates."""
        store = self.dashboard.store
        records = [store.get(r.run_id) or r for r in rows]
        details = [stop_line(r) for r in records]
        plan = self.dashboard.plan
        grace = plan.settings.stop_grace_seconds if plan is not None else 30.0
        count = f"{len(records)} run{'s' if len(records) != 1 else ''}"
        question = f"Stop {count}? SIGTERM now, SIGKILL after {grace:g} s; queued runs are cancelled."

        def answered(yes: bool | None) -> None:
            if yes:
                self.stop_runs([r.run_id for r in records])

        self.push_screen(ConfirmDialog(question, details, yes="Stop"), answered)

    def stop_runs(self, run_ids: list[str]) -> None:
        self._stop(run_ids)

    @work(thread=True, group="control", exit_on_error=False)
    def _stop(self, run_ids: list[str]) -> None:
        errors = self.dashboard.stop(run_ids)
        for error in errors:
            self.call_from_thread(self.notify, error, severity="error")
        if not errors:
            self.call_from_thread(self.notify, f"stopping {', '.join(run_ids)}")
        self.call_from_thread(partial(self.refresh_now, changed=True))

    def move_queued(self, run_id: str, delta: int) -> None:
        try:
            self.dashboard.move(run_id, delta)
        except Exception as exc:
            self.notify(str(exc), severity="error")
        self.refresh_now(changed=True)

    def edit_experiments(self) -> None:
        """Open experiments.toml in $VISUAL / $EDITOR (the app steps aside), then reload it."""
        path = self.dashboard.plan_path or getattr(
            getattr(self.dashboard.plan, "settings", None), "path", None
        )
        path = Path(path) if path else Path("experiments.toml")
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        command = [*shlex.split(editor), str(path)]
        try:
            with self.suspend():
                code = subprocess.call(command)
        except SuspendNotSupported:  # no terminal to hand over (tests, web): run it as it is
            code = subprocess.call(command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.notify(
                f"cannot start the editor {editor!r}: {exc}; set $EDITOR", severity="error", timeout=8
            )
            return
        self.refresh(layout=True)
        self.dashboard.reload_plan()
        if code:
            self.notify(f"{editor} exited with status {code}", severity="warning")
        if self.dashboard.plan_error:
            self.notify("experiments.toml has errors: see the top of the screen", severity="error")
        else:
            self.notify("experiments.toml reloaded")
        self.refresh_now(changed=True)

    # ------------------------------------------------------------------ palette and quit

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Reload experiments.toml", "Read the registry again", self._reload)
        yield SystemCommand(
            "Pause the queue", "Nothing new starts until resumed", partial(self._queue, "pause")
        )
        yield SystemCommand(
            "Resume the queue", "Start queued runs when devices fit", partial(self._queue, "resume")
        )
        plan = self.dashboard.plan
        if plan is not None:
            for exp in list(plan.experiments.values())[:200]:
                yield SystemCommand(
                    f"Run {exp.name}", f"{exp.group}: run now", partial(self.start, [exp.name])
                )
        for row in self.snapshot.runs[:50]:
            yield SystemCommand(
                f"Open run {row.run_id}",
                f"{row.experiment} ({row.status})",
                partial(self.open_run, row.run_id),
            )

    def _reload(self) -> None:
        self.dashboard.reload_plan()
        self.refresh_now(changed=True)

    def _queue(self, verb: str) -> None:
        try:
            from mdtui.scheduling import scheduler

            getattr(scheduler, verb)(self.dashboard.store)
            if verb == "resume":
                plan = self.dashboard.plan
                scheduler.ensure_scheduler(
                    self.dashboard.store.runs_dir, plan.settings.path if plan else None
                )
            self.notify(f"queue {verb}d")
        except Exception as exc:
            self.notify(str(exc), severity="error")
        self.refresh_now(changed=True)

    def toggle_queue_pause(self) -> None:
        self._queue("resume" if self.snapshot.queue_paused else "pause")

    def action_quit_app(self) -> None:
        self.exit(farewell(self.snapshot))


def stop_line(rec: Any) -> str:
    """One run in the stop confirmation: id, experiment, status, devices, pid."""
    devices = getattr(rec, "devices", None) or "-"
    devices = devices if isinstance(devices, str) else ",".join(devices)
    pid = getattr(rec, "pid", None) or "-"
    return f"{rec.run_id}  {rec.experiment}  {rec.status}  dev {devices}  pid {pid}"


def farewell(snapshot: Snapshot) -> str:
    """What the user is told on quitting: nothing stops with the app."""
    live = snapshot.live_count
    queued = sum(1 for r in snapshot.runs if r.status in ("queued", "blocked"))
    parts = [f"{live} run{'s' if live != 1 else ''} keep{'s' if live == 1 else ''} running in the background"]
    if queued:
        parts.append(
            f"{queued} queued run{'s' if queued != 1 else ''} wait{'s' if queued == 1 else ''} for the scheduler"
        )
    return "mdtui: " + " and ".join(parts) + ("; run `mdtui` to look again." if live or queued else ".")


def run_app(plan_path: Path | None = None) -> int:
    """Run the TUI; afterwards say what keeps running (it always does)."""
    message = MdtuiApp(plan_path).run()
    if message:
        print(message)
    return 0
