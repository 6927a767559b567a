"""The front door: experiments and runs in tabs, devices below, every action one key away."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane

from mdtui.runs.status import LIVE, WAITING
from mdtui.tui import messages as msg
from mdtui.tui.text import markup_escape, plain
from mdtui.tui.widgets.experiment_table import ExperimentTable
from mdtui.tui.widgets.gpu_panel import GpuPanel
from mdtui.tui.widgets.run_table import RunTable
from mdtui.tui.widgets.sync_table import SyncTable
from mdtui.views.dashboard import Snapshot

SORT_KEYS = ("file order", "name", "group", "status", "best acc1")


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("1", "tab('experiments')", "Experiments", show=False, id="main.tab1"),
        Binding("2", "tab('runs')", "Runs", show=False, id="main.tab2"),
        # tab switches tabs and keeps the keys on the table: focusing the tab strip (Textual's
        # default) left j/k doing nothing, which reads as a frozen app
        Binding("tab,shift+tab", "other_tab", "Other tab", show=False, id="main.othertab"),
        Binding(
            "space", "toggle", "Select", show=False, id="main.select", tooltip="Select or unselect the row"
        ),
        Binding("enter", "open", "Open", show=False, id="main.open", tooltip="Run details"),
        Binding("r", "run_now", "Run", id="main.run", tooltip="Run the selection now on free devices"),
        Binding("d", "pick_devices", "Devices", id="main.devices", tooltip="Choose devices, then run"),
        Binding("a", "enqueue", "Queue", id="main.queue", tooltip="Add the selection to the queue"),
        Binding("K", "stop", "Stop", id="main.stop", tooltip="Stop the selected runs"),
        Binding(
            "u", "resume", "Resume", show=False, id="main.resume", tooltip="Resume a stopped/failed/lost run"
        ),
        Binding("l", "logs", "Logs", show=False, id="main.logs", tooltip="Log of the run"),
        Binding(
            "c", "compare", "Compare", show=False, id="main.compare", tooltip="Compare the selected runs"
        ),
        Binding("slash", "filter", "Filter", id="main.filter"),
        Binding("s", "sort", "Sort", show=False, id="main.sort"),
        Binding("S", "sort(True)", "Reverse sort", show=False, id="main.rsort"),
        Binding("left_square_bracket", "move(-1)", "Queue up", show=False, id="main.qup"),
        Binding("right_square_bracket", "move(1)", "Queue down", show=False, id="main.qdown"),
        Binding("x", "cancel", "Cancel queued", show=False, id="main.cancel"),
        Binding(
            "P",
            "toggle_pause",
            "Pause queue",
            show=False,
            id="main.pause",
            tooltip="Pause / resume the queue",
        ),
        Binding("e", "edit", "Edit", id="main.edit", tooltip="Edit experiments.toml in $EDITOR"),
        Binding("escape", "clear", "Clear", show=False, id="main.clear"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot = Snapshot()
        self.filter_text = ""
        self.sort_index = 0
        self.sort_reverse = False
        self._empty: dict[str, str] = {}
        # (selected, cursor) of the Experiments tab while experiments.toml has errors: the rows of
        # broken tables leave the table meanwhile, and come back with the selection once it is fixed
        self._kept: tuple[set[str], str | None] | None = None
        self.ready = False  # mounted: the app's first snapshot may arrive before (a worker gathers it)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="body"):
            yield Input(placeholder="filter: part of a name, group, model, loss, status…", id="filter")
            yield Static("", id="plan-error")
            with TabbedContent(initial="experiments", id="tabs"):
                with TabPane("Experiments [1]", id="experiments"):
                    yield Static("", id="experiments-empty", classes="empty", markup=False)
                    yield ExperimentTable(id="experiment-table")
                with TabPane("Runs [2]", id="runs"):
                    yield Static("", id="runs-empty", classes="empty", markup=False)
                    yield RunTable(id="run-table")
            yield GpuPanel(id="gpus")
        # ctrl+p and space are listed by `?`: the footer keeps room for q and ? at 80 columns
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#plan-error", Static).display = False
        self.query_one(ExperimentTable).focus()
        self.ready = True
        snapshot = getattr(self.app, "snapshot", None)
        if isinstance(snapshot, Snapshot) and snapshot is not self.snapshot:
            self.show(snapshot)  # what the app gathered before this screen was ready

    # ------------------------------------------------------------------ data

    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        error = self.query_one("#plan-error", Static)
        error.display = bool(snapshot.plan_error)
        if snapshot.plan_missing:  # an empty folder: nothing is wrong yet, say what to do
            error.update(
                "[b]No experiments.toml here yet[/b]: mdtui reads its experiments from that file.\n"
                "Press [b]e[/b] to start from the template (the demo group: four small runs on built-in"
                " digits data), or run mdtui in the folder that has one (or pass -f PATH)."
            )
        elif snapshot.plan_error:
            error.update(
                "[b]experiments.toml has errors[/b] (press e to edit; runs and the queue keep working):\n"
                + markup_escape(snapshot.plan_error)
            )
        self._show_experiments()
        self._show_runs()
        self.query_one(GpuPanel).show(snapshot.devices, snapshot.holders)
        paused = " · queue paused" if snapshot.queue_paused else ""
        # the Slurm runs' states are as last known: said on every tab, not only in a run's detail
        outage = f" · {snapshot.slurm_outage}" if snapshot.slurm_outage else ""
        self.sub_title = f"{snapshot.live_count} running{paused}{outage}"

    def _matches(self, *fields: str) -> bool:
        needle = self.filter_text.lower()
        return not needle or any(needle in f.lower() for f in fields)

    def _show_experiments(self) -> None:
        rows = [
            r
            for r in self.snapshot.experiments
            if self._matches(r.name, r.group, r.model, r.data, r.loss, r.knobs, r.status)
        ]
        key = SORT_KEYS[self.sort_index]
        if key == "name":
            rows.sort(key=lambda r: r.name, reverse=self.sort_reverse)
        elif key == "group":
            rows.sort(key=lambda r: r.group, reverse=self.sort_reverse)
        elif key == "status":
            rows.sort(key=lambda r: r.status, reverse=self.sort_reverse)
        elif key == "best acc1":
            rows.sort(key=lambda r: (r.best_acc1 is None, -(r.best_acc1 or 0.0)), reverse=self.sort_reverse)
        elif self.sort_reverse:
            rows.reverse()
        table = self.query_one(ExperimentTable)
        if self.snapshot.plan_error and self._kept is None:
            self._kept = (set(table.selected), table.current_key())
        table.sync([(r.name, ExperimentTable.cells(r)) for r in rows])
        if not self.snapshot.plan_error and self._kept is not None:
            (selected, current), self._kept = self._kept, None
            table.restore(selected, current)
        if rows or not self.snapshot.experiments and not self.snapshot.plan_error:
            self._say_empty("experiments", "" if rows else "No experiments in experiments.toml yet.")
        elif self.snapshot.plan_missing:
            self._say_empty("experiments", "No experiments yet: press e to start from the template.")
        elif not self.snapshot.experiments:
            self._say_empty("experiments", "No experiments to show: experiments.toml has errors (above).")
        else:
            self._say_empty(
                "experiments", f"No experiment matches “{self.filter_text}” (escape clears the filter)."
            )

    def _show_runs(self) -> None:
        rows = [r for r in self.snapshot.runs if self._matches(r.run_id, r.experiment, r.status, r.devices)]
        self.query_one(RunTable).sync([(r.run_id, RunTable.cells(r)) for r in rows])
        if rows:
            self._say_empty("runs", "")
        elif self.snapshot.runs:
            self._say_empty("runs", f"No run matches “{self.filter_text}” (escape clears the filter).")
        else:
            self._say_empty("runs", "No runs yet: press r on an experiment to run it.")

    def _say_empty(self, tab: str, text: str) -> None:
        """A line in place of an empty table, saying why it is empty (nothing yet, or the filter)."""
        if self._empty.get(tab) == text:
            return
        self._empty[tab] = text
        label = self.query_one(f"#{tab}-empty", Static)
        label.update(plain(text))
        label.display = bool(text)

    # ------------------------------------------------------------------ helpers

    def _active_table(self) -> SyncTable:
        tabs = self.query_one(TabbedContent)
        if tabs.active == "runs":
            return self.query_one(RunTable)
        return self.query_one(ExperimentTable)

    def _on_runs_tab(self) -> bool:
        return self.query_one(TabbedContent).active == "runs"

    def _chosen_experiments(self) -> list[str]:
        if self._on_runs_tab():
            runs = {r.run_id: r for r in self.snapshot.runs}
            names = [runs[k].experiment for k in self.query_one(RunTable).chosen() if k in runs]
            return list(dict.fromkeys(names))
        return self.query_one(ExperimentTable).chosen()

    def _chosen_runs(self) -> list[str]:
        if self._on_runs_tab():
            return self.query_one(RunTable).chosen()
        latest = {r.name: r.latest_run for r in self.snapshot.experiments}
        return [latest[n] for n in self.query_one(ExperimentTable).chosen() if latest.get(n)]

    # ------------------------------------------------------------------ actions

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._active_table().focus()

    def action_other_tab(self) -> None:
        self.action_tab("experiments" if self._on_runs_tab() else "runs")

    def action_toggle(self) -> None:
        self._active_table().toggle_selected()

    @on(SyncTable.RowSelected)
    def _row_chosen(self, event: SyncTable.RowSelected) -> None:
        event.stop()  # enter on a table row (the DataTable binds enter itself)
        self.action_open()

    def action_open(self) -> None:
        runs = (
            self._chosen_runs()[:1] if not self._on_runs_tab() else [self.query_one(RunTable).current_key()]
        )
        if runs and runs[0]:
            self.post_message(msg.OpenRunRequested(runs[0]))
        else:
            self.notify("No run yet: press r to run it", severity="warning")

    def action_logs(self) -> None:
        runs = self._chosen_runs()
        if runs:
            self.post_message(msg.OpenRunRequested(runs[0], tab="log"))
        else:
            self.notify("No run to show logs for", severity="warning")

    def _experiments_or_say(self, verb: str) -> list[str] | None:
        """The chosen experiments; with none, None after saying why (a broken file: the app says it)."""
        names = self._chosen_experiments()
        if names or self.snapshot.plan_error:
            return names
        self.notify(f"No experiment under the cursor to {verb}", severity="warning")
        return None

    def _done_with_selection(self) -> None:
        """An action took the selection: it ends with it, so that the next key acts on the row under
        the cursor (a K after queueing two experiments ignored the running run it was on)."""
        self._active_table().clear_selection()

    def action_run_now(self) -> None:
        if (names := self._experiments_or_say("run")) is not None:
            self.post_message(msg.RunRequested(names))
            self._done_with_selection()

    def action_pick_devices(self) -> None:
        if (names := self._experiments_or_say("run")) is not None:
            self.post_message(msg.DevicePickRequested(names))

    def action_enqueue(self) -> None:
        if (names := self._experiments_or_say("queue")) is not None:
            self.post_message(msg.QueueRequested(names))
            self._done_with_selection()

    def action_stop(self) -> None:
        runs = {r.run_id: r for r in self.snapshot.runs}
        chosen = [k for k in self._chosen_runs() if k in runs and runs[k].status in LIVE | WAITING]
        if not chosen:
            self.notify("Nothing running or queued is selected", severity="warning")
            return
        self.post_message(msg.StopRequested(chosen))
        self._done_with_selection()

    def action_resume(self) -> None:
        runs = {r.run_id: r for r in self.snapshot.runs}
        chosen = [k for k in self._chosen_runs() if k in runs and runs[k].status in msg.RESUMABLE]
        if not chosen:
            self.notify(
                "No stopped, failed or lost run is selected (u resumes one from its last.pt)",
                severity="warning",
            )
            return
        self.post_message(msg.ResumeRequested(chosen))
        self._done_with_selection()

    def action_compare(self) -> None:
        runs = self._chosen_runs()
        if len(runs) < 2:
            self.notify("Select two or more runs (space) to compare", severity="warning")
            return
        self.post_message(msg.CompareRequested(runs))
        self._done_with_selection()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._show_experiments()
        self._show_runs()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self._active_table().focus()

    def action_clear(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display or self.filter_text:
            box.value = ""
            box.display = False
            self.filter_text = ""
            self._show_experiments()
            self._show_runs()
        else:
            self._active_table().clear_selection()
        self._active_table().focus()

    def action_sort(self, reverse: bool = False) -> None:
        if reverse:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_index = (self.sort_index + 1) % len(SORT_KEYS)
        self._show_experiments()
        order = "descending" if self.sort_reverse else "ascending"
        self.notify(f"Experiments sorted by {SORT_KEYS[self.sort_index]} ({order})", timeout=2)

    def action_move(self, delta: int) -> None:
        key = self.query_one(RunTable).current_key() if self._on_runs_tab() else None
        if key:
            self.post_message(msg.MoveRequested(key, delta))

    def action_cancel(self) -> None:
        runs = {r.run_id: r for r in self.snapshot.runs}
        chosen = [k for k in self._chosen_runs() if k in runs and runs[k].status in WAITING]
        if chosen:
            self.post_message(msg.CancelRequested(chosen))
            self._done_with_selection()
        else:
            self.notify(
                "No queued run is selected (x cancels queued runs; K stops running ones)", severity="warning"
            )

    def action_toggle_pause(self) -> None:
        self.post_message(msg.QueuePauseToggled())

    def action_edit(self) -> None:
        self.post_message(msg.EditRequested())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out what makes no sense here (Textual shows None as disabled).

        r, d and a stay active with a broken experiments.toml: the app then says why nothing starts.
        """
        if action in ("move", "cancel") and not self._on_runs_tab():
            return None
        return True
