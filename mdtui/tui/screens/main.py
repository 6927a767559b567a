"""The front door: experiments and runs in tabs, devices below, every action one key away."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane

from mdtui.tui.widgets.gpu_panel import GpuPanel
from mdtui.tui.widgets.tables import ExperimentTable, RunTable, SyncTable
from mdtui.views.dashboard import LIVE_STATUSES, WAITING_STATUSES, Snapshot

if TYPE_CHECKING:
    from mdtui.tui.app import MdtuiApp

SORT_KEYS = ("file order", "name", "group", "status", "best acc1")


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("1", "tab('experiments')", "Experiments", show=False, id="main.tab1"),
        Binding("2", "tab('runs')", "Runs", show=False, id="main.tab2"),
        Binding("j", "cursor(1)", "Down", show=False, id="main.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="main.up"),
        Binding(
            "space", "toggle", "Select", show=False, id="main.select", tooltip="Select or unselect the row"
        ),
        Binding("enter", "open", "Open", show=False, id="main.open", tooltip="Run details"),
        Binding("r", "run_now", "Run", id="main.run", tooltip="Run the selection now on free devices"),
        Binding("g", "pick_devices", "GPUs", id="main.devices", tooltip="Choose devices, then run"),
        Binding("a", "enqueue", "Queue", id="main.queue", tooltip="Add the selection to the queue"),
        Binding("K", "stop", "Stop", id="main.stop", tooltip="Stop the selected runs"),
        Binding("l", "logs", "Logs", id="main.logs", tooltip="Log of the run"),
        Binding("c", "compare", "Compare", id="main.compare", tooltip="Compare the selected runs"),
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

    @property
    def mdtui(self) -> MdtuiApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="body"):
            yield Input(placeholder="filter: part of a name, group, model, loss, status…", id="filter")
            yield Static("", id="plan-error")
            with TabbedContent(initial="experiments", id="tabs"):
                with TabPane("Experiments [1]", id="experiments"):
                    yield ExperimentTable(id="experiment-table")
                with TabPane("Runs [2]", id="runs"):
                    yield RunTable(id="run-table")
            yield GpuPanel(id="gpus")
        # ctrl+p and space are listed by `?`: the footer keeps room for q and ? at 80 columns
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#plan-error", Static).display = False
        self.query_one(ExperimentTable).focus()

    # ------------------------------------------------------------------ data

    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        error = self.query_one("#plan-error", Static)
        error.display = bool(snapshot.plan_error)
        if snapshot.plan_error:
            error.update(
                f"[b]experiments.toml has errors[/b] (press e to edit, the rest keeps working):\n"
                f"{escape(snapshot.plan_error)}"
            )
        self._show_experiments()
        self._show_runs()
        self.query_one(GpuPanel).show(snapshot.devices, snapshot.holders)
        paused = " · queue paused" if snapshot.queue_paused else ""
        self.sub_title = f"{snapshot.live_count} running{paused}"

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
        self.query_one(ExperimentTable).sync([(r.name, ExperimentTable.cells(r)) for r in rows])

    def _show_runs(self) -> None:
        rows = [r for r in self.snapshot.runs if self._matches(r.run_id, r.experiment, r.status, r.devices)]
        self.query_one(RunTable).sync([(r.run_id, RunTable.cells(r)) for r in rows])

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

    def action_cursor(self, delta: int) -> None:
        table = self._active_table()
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + delta)))

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
            self.mdtui.open_run(runs[0])
        else:
            self.notify("No run yet: press r to run it", severity="warning")

    def action_logs(self) -> None:
        runs = self._chosen_runs()
        if runs:
            self.mdtui.open_run(runs[0], tab="log")
        else:
            self.notify("No run to show logs for", severity="warning")

    def action_run_now(self) -> None:
        names = self._chosen_experiments()
        if names:
            self.mdtui.start(names)

    def action_pick_devices(self) -> None:
        names = self._chosen_experiments()
        if names:
            self.mdtui.pick_devices_and_start(names)

    def action_enqueue(self) -> None:
        names = self._chosen_experiments()
        if names:
            self.mdtui.enqueue(names)

    def action_stop(self) -> None:
        runs = {r.run_id: r for r in self.snapshot.runs}
        chosen = [
            k
            for k in self._chosen_runs()
            if k in runs and runs[k].status in (*LIVE_STATUSES, *WAITING_STATUSES)
        ]
        if not chosen:
            self.notify("Nothing running or queued is selected", severity="warning")
            return
        self.mdtui.confirm_stop([runs[k] for k in chosen])

    def action_compare(self) -> None:
        runs = self._chosen_runs()
        if len(runs) < 2:
            self.notify("Select two or more runs (space) to compare", severity="warning")
            return
        self.mdtui.open_compare(runs)

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
            self.mdtui.move_queued(key, delta)

    def action_cancel(self) -> None:
        runs = {r.run_id: r for r in self.snapshot.runs}
        chosen = [k for k in self._chosen_runs() if k in runs and runs[k].status in WAITING_STATUSES]
        if chosen:
            self.mdtui.stop_runs(chosen)

    def action_toggle_pause(self) -> None:
        self.mdtui.toggle_queue_pause()

    def action_edit(self) -> None:
        self.mdtui.edit_experiments()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out what makes no sense here (Textual shows None as disabled)."""
        if action in ("move", "cancel") and not self._on_runs_tab():
            return None
        if action in ("run_now", "pick_devices", "enqueue") and self.snapshot.plan_error:
            return None
        return True
