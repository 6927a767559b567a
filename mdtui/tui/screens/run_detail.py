"""One run up close: live charts, progress, summary, config, artifacts and its logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static, TabbedContent, TabPane

from engine.schema.events import RunState
from mdtui.tui.widgets.metric_chart import MetricChart
from mdtui.tui.widgets.run_log import RunLog, file_has_problem
from mdtui.tui.widgets.tables import fmt_pct, fmt_secs

if TYPE_CHECKING:
    from mdtui.tui.app import MdtuiApp


def epoch_series(state: RunState) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Chart data from a run state: per-epoch losses and accuracies, step loss, lr."""
    xs = [float(e.epoch + 1) for e in state.epochs]
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {
        "loss": {
            "train": (xs, [e.train_loss for e in state.epochs]),  # type: ignore[dict-item]
            "eval": (xs, [e.eval_loss for e in state.epochs]),  # type: ignore[dict-item]
        },
        "acc1": {
            "train": (xs, [e.train_acc1 for e in state.epochs]),  # type: ignore[dict-item]
            "eval": (xs, [e.eval_acc1 for e in state.epochs]),  # type: ignore[dict-item]
        },
        "step": {"loss": ([p[0] + 1 for p in state.step_losses], [p[1] for p in state.step_losses])},
        "lr": {"lr": (xs, [e.lr for e in state.epochs])},  # type: ignore[dict-item]
    }
    return series


def summary_fields(summary: dict[str, Any]) -> str:
    """run_finished.summary as one readable line (epochs are 0-based there: shown 1-based)."""
    parts = []
    for key, value in summary.items():
        if isinstance(value, (dict, list)) or value is None or key == "epochs_done":
            continue
        if key == "seconds" and isinstance(value, (int, float)):
            parts.append(f"time {fmt_secs(value)}")
        elif key == "best_epoch" and isinstance(value, int):
            parts.append(f"best epoch {value + 1}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.2f}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def summary_text(state: RunState, record: Any, reason: str | None = None) -> str:
    """The Summary tab (Rich markup: every value from a file or the user is escaped)."""
    lines = [
        f"[b]{state.run_id or record.run_id}[/b]  experiment [b]{escape(record.experiment)}[/b]",
        f"status {record.status}   device {','.join(record.devices) or '-'}   seed {record.seed}",
    ]
    if reason:
        lines.append(f"waiting: {escape(reason)}")
    if state.total_epochs:
        lines.append(
            f"epoch {state.epochs_done}/{state.total_epochs}   ETA {fmt_secs(state.eta_seconds()) or '-'}"
        )
    best_epoch = f" (epoch {state.best_epoch + 1})" if state.best_epoch is not None else ""
    lines.append(f"best acc1 {fmt_pct(state.best_acc1) or '-'}{best_epoch}")
    last = state.last_eval or {}
    if last:
        parts = [
            f"{k} {fmt_pct(last.get(k))}"
            for k in ("acc1", "acc5", "many", "medium", "few")
            if last.get(k) is not None
        ]
        lines.append("last eval: " + "  ".join(parts))
    if state.extra_losses:
        lines.append(
            "losses: " + "  ".join(f"{k} {v:.4f}" for k, v in state.extra_losses.items() if v is not None)
        )
    summary = state.summary or {}
    if summary:
        lines.append("summary: " + escape(summary_fields(summary)))
    if record.leaky or summary.get("leaky"):
        lines.append("[b yellow]leaky:[/] masks were sifted from the test split")
    if state.error or record.error:
        lines.append(f"[b red]error:[/] {escape(str(state.error or record.error))}")
    if getattr(record, "note", ""):
        lines.append(f"note: {escape(record.note)}")
    if state.logs:
        lines.append("")
        lines.extend(escape(line) for line in state.logs[-8:])
    return "\n".join(lines)


class RunDetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="run.back"),
        Binding("l", "tab('log')", "Log", id="run.log"),
        Binding("t", "toggle_stream", "stdout/stderr", id="run.stream"),
        Binding(
            "p", "problem", "First error", id="run.problem", tooltip="Jump to the first Traceback, NaN or OOM"
        ),
        Binding("K", "stop", "Stop", id="run.stop"),
        Binding("left_square_bracket", "cycle_tab(-1)", "Previous tab", show=False, id="run.prev"),
        Binding("right_square_bracket", "cycle_tab(1)", "Next tab", show=False, id="run.next"),
    ]

    TABS = ("charts", "summary", "config", "artifacts", "log")

    def __init__(self, run_id: str, tab: str = "charts") -> None:
        super().__init__()
        self.run_id = run_id
        self.initial_tab = tab
        self.stream = "stdout"
        self._artifacts_seen = 0

    @property
    def mdtui(self) -> MdtuiApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield ProgressBar(total=None, show_eta=False, id="progress")
        with TabbedContent(initial=self.initial_tab, id="run-tabs"):
            with TabPane("Charts", id="charts"), Grid(id="chart-grid"):
                yield MetricChart("loss per epoch", id="chart-loss")
                yield MetricChart("acc1 per epoch", id="chart-acc1")
                yield MetricChart("step loss", id="chart-step")
                yield MetricChart("learning rate", id="chart-lr")
            with TabPane("Summary", id="summary"), VerticalScroll():
                yield Static("", id="summary-text")
            with TabPane("Config", id="config"), VerticalScroll():
                yield Static("", id="config-text")
            with TabPane("Artifacts", id="artifacts"):
                yield DataTable(id="artifact-table", cursor_type="row")
            with TabPane("Log", id="log"):
                yield RunLog(id="run-log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        rec = self.mdtui.dashboard.store.get(self.run_id)
        self.title = f"run {self.run_id}"
        if rec is None:
            return
        self.sub_title = rec.experiment
        table = self.query_one("#artifact-table", DataTable)
        table.add_columns("kind", "path", "summary")
        config = Path(rec.run_dir) / "config.json"
        try:
            text = json.dumps(json.loads(config.read_text()), indent=2)
        except (OSError, ValueError):
            text = "(config.json not readable)"
        self.query_one("#config-text", Static).update(text)
        self.query_one(RunLog).follow(Path(rec.run_dir) / f"{self.stream}.log")
        self.refresh_view()

    def refresh_view(self) -> None:
        """Called by the app's timer: redraw from the run's current state."""
        dashboard = self.mdtui.dashboard
        rec = dashboard.store.get(self.run_id)
        if rec is None:
            return
        state = dashboard.run_state(self.run_id) or RunState(run_id=self.run_id)
        self.sub_title = f"{rec.experiment} · {rec.status}"
        bar = self.query_one(ProgressBar)
        if state.total_epochs:
            bar.update(total=state.total_epochs, progress=state.epochs_done)
        series = epoch_series(state)
        for name in ("loss", "acc1", "step", "lr"):
            self.query_one(f"#chart-{name}", MetricChart).show(series[name])
        reason = next((r.reason for r in self.mdtui.snapshot.runs if r.run_id == self.run_id), None)
        self.query_one("#summary-text", Static).update(summary_text(state, rec, reason))
        if len(state.artifacts) > self._artifacts_seen:
            table = self.query_one("#artifact-table", DataTable)
            for item in state.artifacts[self._artifacts_seen :]:
                summary = item.get("summary")
                table.add_row(
                    str(item.get("kind", "")),
                    str(item.get("path", "")),
                    json.dumps(summary)[:80] if summary else "",
                )
            self._artifacts_seen = len(state.artifacts)
        self.query_one(RunLog).poll()

    def action_tab(self, tab: str) -> None:
        self.query_one("#run-tabs", TabbedContent).active = tab

    def action_cycle_tab(self, delta: int) -> None:
        tabs = self.query_one("#run-tabs", TabbedContent)
        index = self.TABS.index(tabs.active) if tabs.active in self.TABS else 0
        tabs.active = self.TABS[(index + delta) % len(self.TABS)]

    def action_toggle_stream(self) -> None:
        rec = self.mdtui.dashboard.store.get(self.run_id)
        if rec is None:
            return
        self.stream = "stderr" if self.stream == "stdout" else "stdout"
        self.query_one(RunLog).follow(Path(rec.run_dir) / f"{self.stream}.log")
        self.action_tab("log")
        self.notify(f"showing {self.stream}.log", timeout=2)

    def action_problem(self) -> None:
        """Jump to the first Traceback / NaN / OOM line, looking in the other stream when this one has none."""
        self.action_tab("log")
        log = self.query_one(RunLog)
        if log.jump_to_problem():
            return
        rec = self.mdtui.dashboard.store.get(self.run_id)
        other = "stderr" if self.stream == "stdout" else "stdout"
        if rec is not None and file_has_problem(Path(rec.run_dir) / f"{other}.log"):
            self.stream = other
            log.follow(Path(rec.run_dir) / f"{other}.log")
            log.jump_to_problem()
            self.notify(f"first problem is in {other}.log", timeout=3)
            return
        self.notify("No Traceback, NaN or out-of-memory line in stdout.log or stderr.log", timeout=3)

    def action_stop(self) -> None:
        rec = self.mdtui.dashboard.store.get(self.run_id)
        if rec is not None:
            self.mdtui.confirm_stop([rec])
