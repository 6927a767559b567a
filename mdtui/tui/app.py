"""The mdtui Textual app: a view over experiments.toml, the run store, the queue and the devices.

Nothing here owns a run. Runs belong to their detached supervisors and the queue to the scheduler,
so quitting, losing SSH or a crash of this app never touches them; on start the app simply reads
the index and the runs' event files again (re-attaching is just reading).

Screens never call the app: they post the messages of ``mdtui.tui.messages`` and the handlers here
decide what to confirm, run it in a worker and say what happened.

Refreshes are paced: one worker thread gathers a snapshot (index, queue, appended event bytes) a few
times per second and the UI applies it in one batch; device queries run at a slower pace.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, SuspendNotSupported, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from mdtui.runs.status import INCOMPLETE, LIVE, WAITING, RunStatus
from mdtui.system.processes import LOGOUT_WARNING, logout_kills_processes
from mdtui.tui import messages as msg
from mdtui.tui.palette import ExperimentCommands
from mdtui.tui.screens.compare import CompareScreen
from mdtui.tui.screens.confirm import ConfirmDialog
from mdtui.tui.screens.device_picker import DevicePickerDialog
from mdtui.tui.screens.help import HelpScreen
from mdtui.tui.screens.main import MainScreen
from mdtui.tui.screens.run_detail import RunDetailScreen
from mdtui.tui.text import one_line, visible
from mdtui.views.dashboard import Dashboard, Snapshot
from mdtui.views.template import write_template

REFRESH_SECONDS = 0.4
DEVICE_REFRESH_SECONDS = 2.0
SHORT = 4.0  # seconds a routine notification stays (it covers the GPU panel meanwhile)
LONG = 10.0  # errors and failures: long enough to read a sentence
ENDINGS = frozenset({RunStatus.COMPLETED, *INCOMPLETE})  # announced with a toast and the bell


class MdtuiApp(App[str]):
    """Returns what keeps running after it quits, as a sentence for the terminal."""

    CSS_PATH = "app.tcss"
    TITLE = "mdtui"
    COMMANDS = App.COMMANDS | {ExperimentCommands}
    BINDINGS = [
        Binding("q", "quit_app", "Quit", id="app.quit", tooltip="Quit; runs and the queue keep going"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("R", "results", "Results", id="app.results", tooltip="RESULTS.md and the report"),
        Binding("ctrl+q", "quit_app", "Quit", show=False, id="app.ctrlq"),
    ]

    def __init__(self, plan_path: Path | None = None, *, dashboard: Dashboard | None = None) -> None:
        super().__init__()
        self.dashboard = dashboard or Dashboard(plan_path)
        self.snapshot = Snapshot()
        self._devices: tuple[Any, ...] = ()
        self._devices_t = 0.0
        self._refreshing = False
        self._applied = False  # a first snapshot is on screen: later changes are news
        self._last_worker_error = ""
        self._plan_loads = self.dashboard.plan_loads  # reads of experiments.toml already said

    def on_mount(self) -> None:
        settings = getattr(self.dashboard.plan, "settings", None)
        self.sub_title = visible(settings.path if settings is not None else self.dashboard.plan_path or "")
        self.push_screen(MainScreen())
        self.refresh_now()
        self.set_interval(REFRESH_SECONDS, self.refresh_now)
        if logout_kills_processes():
            self.say(LOGOUT_WARNING, severity="warning", timeout=15)

    def say(self, text: str, *, severity: str = "information", timeout: float = SHORT) -> None:
        """A notification of plain text: names such as ``a[lr=1e-05]`` are shown, never read as markup."""
        self.notify(visible(text), severity=severity, timeout=timeout, markup=False)  # type: ignore[arg-type]

    def _say_later(self, text: str, **kwargs: Any) -> None:
        """``say`` from a worker thread."""
        self.call_from_thread(partial(self.say, text, **kwargs))

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
        previous, self.snapshot = self.snapshot, snapshot
        if self._applied:
            self._announce_endings(previous, snapshot)
        if snapshot.plan_loads > self._plan_loads:  # edited outside the app: read again by itself
            self._plan_loads = snapshot.plan_loads
            self._say_plan_read("experiments.toml changed on disk")
        self._applied = True
        with self.batch_update():
            for screen in self.screen_stack:
                # a screen pushed but not yet mounted has no tables yet: it shows app.snapshot on mount
                if isinstance(screen, MainScreen) and screen.ready:
                    screen.show(snapshot)
            if isinstance(self.screen, (RunDetailScreen, CompareScreen)):
                self.screen.refresh_view(snapshot)

    def _announce_endings(self, previous: Snapshot, snapshot: Snapshot) -> None:
        """A run that ended since the last look is news: a toast (a failure with its one-line reason)
        and the terminal bell, so a run that ends while mdtui sits in another tmux window is heard."""
        before = {r.run_id: r.status for r in previous.runs}
        ended = False
        for row in snapshot.runs:
            was = before.get(row.run_id)
            # a row new to the list that is already over is news only when it failed (it started and
            # failed between two looks); a finished run that scrolls into the list is not
            if (
                row.status not in ENDINGS
                or was == row.status
                or (was is None and row.status != RunStatus.FAILED)
            ):
                continue
            ended = True
            if row.status == RunStatus.FAILED:
                reason = one_line(row.error) or "see its log (l)"
                self.say(f"{row.experiment} failed ({row.run_id}): {reason}", severity="error", timeout=LONG)
            elif row.status == RunStatus.COMPLETED:
                best = f": best acc1 {row.best:.2f}%" if row.best is not None else ""
                self.say(f"{row.experiment} completed ({row.run_id}){best}", timeout=LONG)
            else:
                reason = f": {one_line(row.error)}" if row.error else ""
                self.say(
                    f"{row.experiment} {row.status} ({row.run_id}){reason}", severity="warning", timeout=LONG
                )
        if ended:
            self.bell()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised (a locked database, a bug) is said, not swallowed; refresh errors once each."""
        if event.state != WorkerState.ERROR or event.worker.group not in ("control", "refresh"):
            return
        text = f"{event.worker.name.strip('_')} failed: {event.worker.error}"
        if text != self._last_worker_error:
            self._last_worker_error = text
            self.say(text, severity="error", timeout=LONG)

    # ------------------------------------------------------------------ navigation

    @on(msg.OpenRunRequested)
    def _open_run(self, message: msg.OpenRunRequested) -> None:
        self.open_run(message.run_id, message.tab)

    def open_run(self, run_id: str, tab: str | None = None) -> None:
        self.push_screen(RunDetailScreen(run_id, self.dashboard, tab=tab))

    @on(msg.CompareRequested)
    def _open_compare(self, message: msg.CompareRequested) -> None:
        self.push_screen(CompareScreen(message.run_ids, self.dashboard))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_results(self) -> None:
        # imported here, not at the top: the report renderer and Textual's Markdown cost ~40 % of the
        # app's import time, and the first screen must show in under a second (benchmarks/README.md)
        from mdtui.tui.screens.results import ResultsScreen

        if not isinstance(self.screen, ResultsScreen):
            self.push_screen(ResultsScreen(self.dashboard))

    # ------------------------------------------------------------------ run and queue

    @on(msg.RunRequested)
    def _run_requested(self, message: msg.RunRequested) -> None:
        if self._refuse_with_plan_error("run", message.names):
            return
        self._confirm_duplicates(message.names, "Run", partial(self._start, message.names, message.devices))

    @on(msg.QueueRequested)
    def _queue_requested(self, message: msg.QueueRequested) -> None:
        if self._refuse_with_plan_error("queue", message.names):
            return
        self._confirm_duplicates(message.names, "Queue", partial(self._enqueue, message.names, None))

    @on(msg.DevicePickRequested)
    def _pick_requested(self, message: msg.DevicePickRequested) -> None:
        if self._refuse_with_plan_error("run", message.names):
            return
        names = message.names

        def chosen(devices: list[str] | None) -> None:
            if devices:
                self._confirm_duplicates(names, "Run", partial(self._start, names, devices))

        self.push_screen(DevicePickerDialog(self._devices, self.snapshot.holders, names), chosen)

    def _refuse_with_plan_error(self, verb: str, names: list[str]) -> bool:
        """Nothing can start while experiments.toml cannot be read: say why instead of doing nothing."""
        if self.dashboard.plan is not None and names:
            return False
        if self.dashboard.plan is not None:
            self.say(f"cannot {verb}: every experiment in experiments.toml has errors (shown at the top)")
            return True
        if self.dashboard.plan_missing:
            self.say(
                f"cannot {verb}: there is no experiments.toml here yet; press e to start from the template"
            )
            return True
        self.say(
            f"cannot {verb}: experiments.toml has errors (shown at the top); press e to edit it",
            severity="error",
            timeout=LONG,
        )
        return True

    def _confirm_duplicates(self, names: list[str], verb: str, go: Callable[[], object]) -> None:
        """Queueing an experiment that already runs or waits is usually a slip: ask first."""
        busy = {
            r.experiment: r
            for r in self.snapshot.runs
            if r.status in LIVE | WAITING and r.experiment in names
        }
        if not busy:
            go()
            return
        lines = [f"{name}: {row.status} as {row.run_id}" for name, row in busy.items()]
        many = len(busy) > 1
        question = (
            f"{len(busy)} of these experiments already have a run running or queued. {verb} another run anyway?"
            if many
            else f"{next(iter(busy))} already has a run {next(iter(busy.values())).status}. {verb} another run anyway?"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                go()

        self.push_screen(ConfirmDialog(question, lines, yes=f"{verb} again", danger=False), answered)

    @work(thread=True, group="control", exit_on_error=False)
    def _start(self, names: list[str], devices: list[str] | None) -> None:
        started, queued, errors = self.dashboard.start_now(names, devices)
        if started:
            self._say_later("started " + ", ".join(self._started_line(run_id) for run_id in started))
        for name in queued:  # each with its own reason: the app knows which one holds it back
            self._say_later(f"queued {name}: {self.dashboard.why_queued(name)}", timeout=LONG)
        for error in errors:
            self._say_later(error, severity="error", timeout=LONG)
        self.call_from_thread(partial(self.refresh_now, changed=True))

    def _started_line(self, run_id: str) -> str:
        """``tiny (…-ab12) on GPU 0``: the experiment, the run id's end, where it runs."""
        rec = self.dashboard.store.get(run_id) if self.dashboard.store is not None else None
        if rec is None:
            return run_id
        devices = [str(d) for d in rec.devices or []]
        where = "the CPU" if devices in ([], ["cpu"]) else f"GPU {','.join(d for d in devices if d != 'cpu')}"
        return f"{rec.experiment} (…{run_id[-4:]}) on {where}"

    @work(thread=True, group="control", exit_on_error=False)
    def _enqueue(self, names: list[str], devices: list[str] | None) -> None:
        errors = self.dashboard.enqueue(names, devices)
        for error in errors:
            self._say_later(error, severity="error", timeout=LONG)
        if not errors:
            self._say_later(f"queued: {', '.join(names)}")
        self.call_from_thread(partial(self.refresh_now, changed=True))

    # ------------------------------------------------------------------ stop, kill, cancel

    @on(msg.StopRequested)
    def _stop_requested(self, message: msg.StopRequested) -> None:
        self.confirm_stop(message.run_ids)

    def confirm_stop(self, runs: Iterable[Any]) -> None:
        """Ask before stopping: list each run, say how the stop escalates; K on a stopping run offers a kill."""
        ids = [r if isinstance(r, str) else r.run_id for r in runs]
        rows = {r.run_id: r for r in self.snapshot.runs}
        chosen = [rows[i] for i in ids if i in rows and rows[i].status in LIVE | WAITING]
        if not chosen:
            self.say("Nothing running or queued is selected", severity="warning")
            return
        store = self.dashboard.store
        details = [stop_line(store.get(r.run_id) or r) for r in chosen]
        stopping = [r for r in chosen if r.stop_deadline is not None]
        if stopping and len(stopping) == len(chosen):
            left = max(0, round(min(r.stop_deadline or 0 for r in stopping) - time.time()))
            question = (
                f"Kill {plural(len(chosen), 'run')} now? Already stopping; SIGKILL would follow in {left} s."
                " Killing sends SIGKILL to the whole process group at once: no last.pt is saved."
            )
            self.push_screen(
                ConfirmDialog(question, details, yes="Kill now"),
                partial(self._answered, self._kill, [r.run_id for r in chosen]),
            )
            return
        grace = self.dashboard.stop_grace()
        question = (
            f"Stop {plural(len(chosen), 'run')}? SIGTERM now, SIGKILL after {grace:g} s if still alive;"
            " queued runs are cancelled."
        )
        self.push_screen(
            ConfirmDialog(question, details, yes="Stop"),
            partial(self._answered, self._stop, [r.run_id for r in chosen]),
        )

    @staticmethod
    def _answered(action: Callable[[list[str]], object], run_ids: list[str], yes: bool | None) -> None:
        if yes:
            action(run_ids)

    @on(msg.CancelRequested)
    def _cancel_requested(self, message: msg.CancelRequested) -> None:
        self._stop(message.run_ids)

    @work(thread=True, group="control", exit_on_error=False)
    def _stop(self, run_ids: list[str]) -> None:
        rows = {r.run_id: r for r in self.snapshot.runs}
        waiting = [i for i in run_ids if i in rows and rows[i].status in WAITING]
        live = [i for i in run_ids if i not in waiting]
        errors = self.dashboard.stop(run_ids)
        failed = {e.split(":", 1)[0] for e in errors}
        for error in errors:
            self._say_later(error, severity="error", timeout=LONG)
        if cancelled := [i for i in waiting if i not in failed]:
            self._say_later(f"cancelled {', '.join(cancelled)}")
        if stopping := [i for i in live if i not in failed]:
            self._say_later(
                f"stopping {', '.join(stopping)}: SIGKILL after {self.dashboard.stop_grace():g} s"
            )
        self.call_from_thread(partial(self.refresh_now, changed=True))

    @work(thread=True, group="control", exit_on_error=False)
    def _kill(self, run_ids: list[str]) -> None:
        errors = self.dashboard.stop(run_ids, kill=True)
        for error in errors:
            self._say_later(error, severity="error", timeout=LONG)
        if not errors:
            self._say_later(f"killing {', '.join(run_ids)}")
        self.call_from_thread(partial(self.refresh_now, changed=True))

    @on(msg.ResumeRequested)
    def _resume_requested(self, message: msg.ResumeRequested) -> None:
        self._resume(message.run_ids)

    @work(thread=True, group="control", exit_on_error=False)
    def _resume(self, run_ids: list[str]) -> None:
        """Each run from its last.pt, refused as `mdtui run --resume` refuses (the reason is said)."""
        for run_id in run_ids:
            rec, refused = self.dashboard.resume(run_id)
            if refused is not None:
                self._say_later(f"cannot resume {run_id}: {refused}", severity="error", timeout=LONG)
                continue
            self._say_later(f"resuming {self._started_line(run_id)} from its last.pt")
        self.call_from_thread(partial(self.refresh_now, changed=True))

    @on(msg.MoveRequested)
    def _move_requested(self, message: msg.MoveRequested) -> None:
        try:
            self.dashboard.move(message.run_id, message.delta)
        except Exception as exc:  # the queue changed under us: say so, the next refresh shows it
            self.say(str(exc), severity="error")
        self.refresh_now(changed=True)

    # ------------------------------------------------------------------ experiments.toml

    @on(msg.EditRequested)
    def edit_experiments(self) -> None:
        """Open experiments.toml in $VISUAL / $EDITOR (the app steps aside), then reload it; in a
        folder without one, offer the template (the demo group) instead of an empty buffer."""
        path = self._plan_path()
        if not path.exists():
            self.push_screen(
                ConfirmDialog(
                    f"There is no {path.name} here yet: mdtui's experiments live in that file. Start"
                    " from the template (the demo group: four small runs on built-in digits data)?",
                    [str(path.resolve())],
                    yes="Use the template",
                    danger=False,
                ),
                self._create_then_edit,
            )
            return
        self._edit(path)

    def _plan_path(self) -> Path:
        path = self.dashboard.plan_path or getattr(
            getattr(self.dashboard.plan, "settings", None), "path", None
        )
        return Path(path) if path else Path("experiments.toml")

    def _create_then_edit(self, template: bool | None) -> None:
        path = self._plan_path()
        if template:
            try:
                write_template(path)
            except FileExistsError:
                pass  # written meanwhile (another shell): edit what is there
            except OSError as exc:
                self.say(f"cannot write {path}: {exc}", severity="error", timeout=LONG)
                return
        self._edit(path)

    def _edit(self, path: Path) -> None:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        command = [*shlex.split(editor), str(path)]
        try:
            with self.suspend():
                code = subprocess.call(command)
        except SuspendNotSupported:  # no terminal to hand over (tests, web): run it as it is
            code = subprocess.call(command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.say(
                f"cannot start the editor {editor!r}: {exc}; set $EDITOR", severity="error", timeout=LONG
            )
            return
        self.refresh(layout=True)
        self.dashboard.reload_plan()
        self._plan_loads = self.dashboard.plan_loads
        if code:
            self.say(f"{editor} exited with status {code}", severity="warning")
        self._say_plan_read("experiments.toml")
        self.refresh_now(changed=True)

    def _say_plan_read(self, what: str) -> None:
        if self.dashboard.plan_error:
            self.say(f"{what}: it has errors, see the top of the screen", severity="error")
        else:
            self.say(f"{what}: reloaded")

    def _from_template(self) -> None:
        self._create_then_edit(True)

    def _reload(self) -> None:
        self.dashboard.reload_plan()
        self._plan_loads = self.dashboard.plan_loads
        self._say_plan_read("experiments.toml")
        self.refresh_now(changed=True)

    # ------------------------------------------------------------------ the queue

    @on(msg.QueuePauseToggled)
    def toggle_queue_pause(self) -> None:
        resuming = self.snapshot.queue_paused
        try:
            from mdtui.scheduling import scheduler

            store, plan = self.dashboard.store, self.dashboard.plan
            if resuming:  # its scheduler first, as `mdtui queue resume` does
                scheduler.resume_and_start(store, plan.settings.path if plan else None)
            else:
                scheduler.pause(store)
            self.say("queue resumed" if resuming else "queue paused")
        except Exception as exc:  # no store yet, a locked database: a message, not a crash
            self.say(str(exc), severity="error")
        self.refresh_now(changed=True)

    # ------------------------------------------------------------------ palette and quit

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # experiments and runs come from ExperimentCommands (their names are not markup)
        yield from super().get_system_commands(screen)
        yield SystemCommand("Reload experiments.toml", "Read the registry again", self._reload)
        if self.snapshot.plan_missing:
            yield SystemCommand(
                "Create experiments.toml from the template",
                "The demo group: four small runs on built-in digits data",
                self._from_template,
            )
        if self.snapshot.queue_paused:  # only what can be done now
            yield SystemCommand(
                "Resume the queue", "Start queued runs when devices fit", self.toggle_queue_pause
            )
        else:
            yield SystemCommand(
                "Pause the queue", "Nothing new starts until resumed", self.toggle_queue_pause
            )

    def action_help_quit(self) -> None:
        """Ctrl+C is copy in Textual; a user pressing it wants out: say how."""
        self.say("Press q to quit (runs and the queue keep going)", timeout=SHORT)

    def action_quit_app(self) -> None:
        self.exit(farewell(self.snapshot))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def stop_line(rec: Any) -> str:
    """One run in the stop confirmation: id, experiment, status, devices, pid."""
    devices = getattr(rec, "devices", None) or "-"
    devices = devices if isinstance(devices, str) else ",".join(str(d) for d in devices)
    pid = getattr(rec, "pid", None) or "-"
    return f"{rec.run_id}  {rec.experiment}  {rec.status}  dev {devices}  pid {pid}"


def farewell(snapshot: Snapshot) -> str:
    """What the user is told on quitting: nothing stops with the app."""
    live = snapshot.live_count
    queued = sum(1 for r in snapshot.runs if r.status in WAITING)
    parts = [f"{live} run{'s' if live != 1 else ''} keep{'s' if live == 1 else ''} running in the background"]
    runs = f"{queued} queued run{'s' if queued != 1 else ''}"
    if queued and snapshot.queue_paused:  # nothing starts them until someone resumes the queue
        parts.append(f"{runs} wait{'s' if queued == 1 else ''} in a paused queue")
        return "mdtui: " + " and ".join(parts) + "; `mdtui queue resume` (or P in mdtui) starts them."
    if queued:
        parts.append(f"{runs} wait{'s' if queued == 1 else ''} for the scheduler")
    return "mdtui: " + " and ".join(parts) + ("; run `mdtui` to look again." if live or queued else ".")


def exit_status(app: MdtuiApp) -> int:
    """After the app ends: the farewell, or (after a crash, whose traceback Textual printed) a plain word."""
    code = app.return_code or 0
    if code:
        print(
            "mdtui: the TUI stopped on an internal error (details above). Runs and the queue are not"
            " affected; `mdtui status` shows them. Please report the error.",
            file=sys.stderr,
        )
        return code
    if app.return_value:
        print(app.return_value)
    return 0


def run_app(plan_path: Path | None = None) -> int:
    """Run the TUI; afterwards say what keeps running (it always does). Returns the exit code."""
    app = MdtuiApp(plan_path)
    app.run()
    return exit_status(app)


__all__ = ["MdtuiApp", "exit_status", "farewell", "run_app", "stop_line"]
