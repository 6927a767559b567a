"""One run up close: live charts, progress, summary, config, artifacts and its logs.

The screen takes the dashboard it reads from and posts ``StopRequested`` for the app to confirm; it
never imports the app. The app calls ``refresh_view`` with each new snapshot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    ProgressBar,
    Static,
    TabbedContent,
    TabPane,
)

from engine.schema.events import RunState
from mdtui.runs.disk import fmt_size, tree_size
from mdtui.runs.status import FINISHED, LIVE, WAITING
from mdtui.tui.messages import RESUMABLE, ResumeRequested, StopRequested
from mdtui.tui.text import markup_escape, plain, visible
from mdtui.tui.widgets.cells import fmt_eta, fmt_pct, fmt_secs
from mdtui.tui.widgets.metric_chart import MetricChart
from mdtui.tui.widgets.run_log import RunLog, file_has_problem
from mdtui.tui.widgets.vi_scroll import ViScroll
from mdtui.views.artifacts import Artifact, run_artifacts
from mdtui.views.progress import StepProgress, run_eta, step_progress

# Below this many rows the four charts would be a few rows each: show loss and acc1 only, taller.
COMPACT_ROWS = 28
# Runs that ended with an error open on Summary, where the error is (their charts are mostly empty).
# Runs that wait (queued, blocked) have no charts yet: Summary says why they wait.
OPEN_ON_SUMMARY = frozenset({"failed", "lost", "queued", "blocked"})
STREAMS = ("stdout", "stderr")
ARTIFACT_SECONDS = 2.0  # how often the run folder is listed again for the Artifacts tab
DISK_SECONDS = 5.0  # how often the Summary tab measures the run folder again


def epoch_series(state: RunState) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Chart data from a run state: per-epoch losses and accuracies, step loss, lr."""
    xs = [float(e.epoch + 1) for e in state.epochs]
    steps = ([p[0] + 1 for p in state.step_losses], [p[1] for p in state.step_losses])
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {
        "loss": {
            "train": (xs, [e.train_loss for e in state.epochs]),  # type: ignore[dict-item]
            "eval": (xs, [e.eval_loss for e in state.epochs]),  # type: ignore[dict-item]
        },
        "acc1": {
            "train": (xs, [e.train_acc1 for e in state.epochs]),  # type: ignore[dict-item]
            "eval": (xs, [e.eval_acc1 for e in state.epochs]),  # type: ignore[dict-item]
        },
        "step": {"loss": steps},
        "lr": {"lr": (xs, [e.lr for e in state.epochs])},  # type: ignore[dict-item]
    }
    if not state.epochs and state.step_losses:  # a long first epoch: its steps, not "no data yet"
        series["loss"] = {"step loss": steps}
    return series


def summary_fields(summary: dict[str, Any]) -> str:
    """run_finished.summary as one readable line (epochs are 0-based there: shown 1-based)."""
    parts = []
    for key, value in summary.items():
        if isinstance(value, (dict, list)) or value is None or key == "epochs_done":
            continue
        if key == "seconds" and isinstance(value, (int, float)):
            parts.append(f"training time {fmt_secs(value)}")
        elif key == "best_epoch" and isinstance(value, int):
            parts.append(f"best epoch {value + 1}")
        elif key == "leaky":
            continue  # said on a line of its own when true
        elif key == "selected_on":
            parts.append(f"best epoch chosen on the {value} split")
        elif isinstance(value, bool):
            parts.append(f"{key.replace('_', ' ')}: {'yes' if value else 'no'}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.2f}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def summary_text(
    state: RunState,
    record: Any,
    reason: str | None = None,
    now: float | None = None,
    *,
    disk: int | None = None,
) -> str:
    """The Summary tab (markup: every value from a file or the user is escaped); the error comes first.
    ``disk``: the bytes of its checkpoints (what ``mdtui gc`` frees), shown once it has any; the whole
    folder's size is in ``mdtui status --all`` (it moves with run.json, so snapshots leave it out)."""
    esc = markup_escape
    lines = [
        f"[b]{esc(state.run_id or record.run_id)}[/b]  experiment [b]{esc(record.experiment)}[/b]",
        f"status {record.status}   device {esc(','.join(map(str, record.devices)) or '-')}   seed {record.seed}",
    ]
    if disk:
        lines.append(f"checkpoints {fmt_size(disk)} on disk (mdtui gc frees them)")
    if state.error or record.error:
        lines.append(f"[b red]error:[/] {esc(state.error or record.error)}")
    if reason:  # the scheduler's reason often begins with "waiting" already
        lines.append(esc(reason) if reason.lower().startswith("waiting") else f"waiting: {esc(reason)}")
    if record.status in RESUMABLE:  # say how to go on from here
        if (Path(record.run_dir) / "checkpoints" / "last.pt").is_file():
            lines.append("[b]u[/b] resumes it from checkpoints/last.pt (as `mdtui run --resume`)")
        else:
            lines.append("no checkpoints/last.pt to resume from: r on its experiment starts a new run")
    slurm_line = getattr(record, "slurm_line", None)  # a Slurm run: state, reason, node, elapsed of the limit
    if slurm_line:
        lines.append(esc(slurm_line))
    started = getattr(record, "started_t", None)
    if started:  # the same wall time as `mdtui status` (the summary's is training time)
        ended = record.ended_t if record.status in FINISHED else None
        lines.append(f"elapsed {fmt_secs((ended or now or time.time()) - started)}")
    if state.total_epochs:
        live = record.status in LIVE
        eta = f"   ETA {fmt_secs(run_eta(state, now or time.time())) or '-'}" if live else ""
        lines.append(f"epoch {state.epochs_done}/{state.total_epochs}{eta}")
    best_epoch = f" (epoch {state.best_epoch + 1})" if state.best_epoch is not None else ""
    lines.append(f"best acc1 {fmt_pct(state.best_acc1) or '-'}{best_epoch}")
    last = state.last_eval or {}
    if last:
        shots = [k for k in ("many", "medium", "few") if last.get(k) is not None]
        # balanced data puts every class in one group, whose accuracy is acc1 again: only a long
        # tail (classes in two groups or more) makes many/medium/few worth reading
        keys = ["acc1", "acc5", *(shots if len(shots) > 1 else [])]
        parts = [f"{k} {fmt_pct(last.get(k))}" for k in keys if last.get(k) is not None]
        lines.append("last eval: " + "  ".join(parts))
    if state.extra_losses:
        lines.append(
            "losses: "
            + "  ".join(f"{esc(k)} {v:.4f}" for k, v in state.extra_losses.items() if v is not None)
        )
    summary = state.summary or {}
    if summary:
        lines.append("summary: " + esc(summary_fields(summary)))
    if record.leaky or summary.get("leaky"):
        lines.append("[b yellow]leaky:[/] masks were sifted from the test split")
    if getattr(record, "note", ""):
        lines.append(f"note: {esc(record.note)}")
    if state.logs:
        lines.append("")
        lines.extend(esc(line) for line in state.logs[-8:])
    return "\n".join(lines)


def cut_path(path: str, width: int) -> str:
    """``path`` in ``width`` characters, cut in the middle so that the file name stays whole."""
    if len(path) <= width:
        return path
    head, _, name = path.rpartition("/")
    if not head or len(name) + 2 > width:  # the name alone does not fit: keep its end (the extension)
        return "…" + path[len(path) - width + 1 :]
    room = width - len(name) - 2  # "…/" before the name
    return (head[:room] + "…/" + name) if room > 0 else "…/" + name


def one_line_json(value: Any, width: int) -> str:
    """``value`` as JSON on one line; when too long, cut after the last whole item that fits."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= width:
        return text
    head = text[: max(width - 1, 0)]
    cut = max(head.rfind(", "), head.rfind(" "))
    return (head[:cut].rstrip(",") if cut > 0 else head) + "…"


def step_line(progress: StepProgress) -> str:
    """``epoch 1/4 · step 15/97 · loss 1.3600 · epoch ends in 0m42s``: life inside a long epoch."""
    text = progress.text()
    if progress.epoch_left is not None:
        text += f" · epoch ends in {fmt_secs(progress.epoch_left)}"
    return text


class ArtifactTable(DataTable[str]):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g,home", "scroll_top", "First", show=False),
        Binding("G,end", "scroll_bottom", "Last", show=False),
    ]


class RunDetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back", id="run.back"),
        Binding("l", "tab('log')", "Log", id="run.log"),
        Binding("t", "toggle_stream", "stdout/stderr", id="run.stream"),
        Binding(
            "p", "problem", "First error", id="run.problem", tooltip="Jump to the first Traceback, NaN or OOM"
        ),
        Binding("K", "stop", "Stop", id="run.stop"),
        Binding("u", "resume", "Resume", show=False, id="run.resume", tooltip="Resume from last.pt"),
        Binding("left_square_bracket", "cycle_tab(-1)", "Previous tab", show=False, id="run.prev"),
        Binding("right_square_bracket", "cycle_tab(1)", "Next tab", show=False, id="run.next"),
    ]
    CSS = """
    RunDetailScreen #chart-grid { grid-size: 2 2; grid-gutter: 0 1; height: 1fr; }
    RunDetailScreen #chart-grid.compact { grid-size: 2 1; }
    RunDetailScreen #chart-grid.compact .secondary { display: none; }
    RunDetailScreen #progress.hidden { display: none; }
    RunDetailScreen #step-line { height: 1; padding: 0 1; color: $text-muted; }
    RunDetailScreen #log-source { height: 1; padding: 0 1; background: $boost; }
    RunDetailScreen ViScroll, RunDetailScreen RunLog, RunDetailScreen ArtifactTable {
        border-left: outer $panel;
    }
    RunDetailScreen ViScroll:focus, RunDetailScreen RunLog:focus, RunDetailScreen ArtifactTable:focus {
        border-left: outer $accent;
    }
    """

    TABS = ("charts", "summary", "config", "artifacts", "log")
    FOCUS = {
        "summary": "#summary-scroll",
        "config": "#config-scroll",
        "artifacts": "#artifact-table",
        "log": RunLog,
    }

    def __init__(self, run_id: str, dashboard: Any, *, tab: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.dashboard = dashboard
        self.initial_tab = tab or self._tab_for(run_id)
        self.stream = "stdout"
        self._artifacts: list[Artifact] = []
        self._artifacts_t = 0.0  # when the run folder was last listed
        self._run_dir: Path | None = None
        self._ready = False  # composed and mounted: the app's timer may call refresh_view before that
        self._disk: tuple[float, int] | None = None  # (when measured, the checkpoints' bytes)

    def _tab_for(self, run_id: str) -> str:
        """Where a run opens: a run that ended in an error on Summary (the error), any other on Charts."""
        rec = self.dashboard.store.get(run_id) if self.dashboard.store is not None else None
        return "summary" if rec is not None and rec.status in OPEN_ON_SUMMARY else "charts"

    def compose(self) -> ComposeResult:
        yield Header()
        yield ProgressBar(total=None, show_eta=False, id="progress")
        yield Static("", id="step-line", markup=False)
        with TabbedContent(initial=self.initial_tab, id="run-tabs"):
            with TabPane("Charts", id="charts"), Grid(id="chart-grid"):
                yield MetricChart("loss per epoch", id="chart-loss")
                yield MetricChart("acc1 per epoch", id="chart-acc1")
                yield MetricChart("step loss (x: epoch)", id="chart-step", classes="secondary")
                yield MetricChart("learning rate per epoch", id="chart-lr", classes="secondary")
            with TabPane("Summary", id="summary"), ViScroll(id="summary-scroll"):
                yield Static("", id="summary-text")
            with TabPane("Config", id="config"), ViScroll(id="config-scroll"):
                yield Static("", id="config-text", markup=False)
            with TabPane("Artifacts", id="artifacts"):
                yield ArtifactTable(id="artifact-table", cursor_type="row")
            with TabPane("Log · stdout", id="log"):
                yield Static("", id="log-source")
                yield RunLog(id="run-log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = f"run {self.run_id}"
        table = self.query_one(ArtifactTable)
        table.add_column("kind", key="kind")
        table.add_column("path", key="path")
        table.add_column("summary", key="summary")
        rec = self.dashboard.store.get(self.run_id) if self.dashboard.store is not None else None
        if rec is None:
            self.query_one("#summary-text", Static).update(
                f"run {markup_escape(self.run_id)} is not in the index"
            )
            return
        self._run_dir = Path(rec.run_dir)
        config = self._run_dir / "config.json"
        try:
            text = json.dumps(json.loads(config.read_text()), indent=2, ensure_ascii=False)
        except (OSError, ValueError):
            text = "(config.json not readable)"
        self.query_one("#config-text", Static).update(visible(text))
        self.query_one(RunLog).follow(self._run_dir / f"{self.stream}.log")
        self._ready = True
        self._layout_charts()
        self.refresh_view()
        self._focus_tab(self.initial_tab)

    # ------------------------------------------------------------------ refresh

    def refresh_view(self, snapshot: Any = None) -> None:
        """Called with each snapshot the app gathers (a few times a second): redraw from the run's state."""
        store = self.dashboard.store
        rec = store.get(self.run_id) if store is not None and self._ready else None
        if rec is None:
            return
        state = self.dashboard.run_state(self.run_id) or RunState(run_id=self.run_id)
        self.sub_title = f"{visible(rec.experiment)} · {rec.status}"
        self._show_progress(state, rec)
        series = epoch_series(state)
        for name in ("loss", "acc1", "step", "lr"):
            self.query_one(f"#chart-{name}", MetricChart).show(series[name])
        rows = getattr(snapshot, "runs", ()) if snapshot is not None else ()
        reason = next((r.reason for r in rows if r.run_id == self.run_id), None)
        if getattr(snapshot, "queue_paused", False) and rec.status in WAITING:
            # paused, nothing starts it: the scheduler's own reason is beside the point
            reason = "the queue is paused; P (or `mdtui queue resume`) lets it start"
        self.query_one("#summary-text", Static).update(
            summary_text(state, rec, reason, disk=self._disk_size(rec))
        )
        self._list_artifacts(state, Path(rec.run_dir))
        log = self.query_one(RunLog)
        log.poll()
        self._show_log_source(log)

    def _disk_size(self, rec: Any) -> int:
        """The run's checkpoints' bytes, walked at most every few seconds (refresh_view runs several
        times a second)."""
        now = time.monotonic()
        if self._disk is None or now - self._disk[0] > DISK_SECONDS:
            self._disk = (now, tree_size(Path(rec.run_dir) / "checkpoints"))
        return self._disk[1]

    def _list_artifacts(self, state: RunState, run_dir: Path) -> None:
        """The engine's artifacts and the files of artifacts/ and checkpoints/, listed again every
        few seconds (refresh_view runs several times a second; a listing walks two folders)."""
        now = time.monotonic()
        if self._artifacts and now - self._artifacts_t < ARTIFACT_SECONDS:
            return
        self._artifacts_t = now
        found = run_artifacts(run_dir, state)
        if found != self._artifacts:
            self._artifacts = found
            self._fill_artifacts()

    def _show_progress(self, state: RunState, rec: Any) -> None:
        """A bar for a run that is going or went somewhere; never an animated 'busy' bar for one that ended."""
        bar = self.query_one(ProgressBar)
        total = state.total_epochs or rec.total_epochs
        done: float = state.epochs_done or rec.epochs_done or 0
        ended = rec.status in FINISHED or state.finished
        progress = step_progress(state, time.time()) if rec.status in LIVE else None
        if progress is not None and progress.steps_per_epoch:  # inside an epoch: its steps count too
            done += min(1.0, progress.step / progress.steps_per_epoch)
        if total:
            bar.update(total=total, progress=done)
        # a waiting run has not begun (0 % reads as started), and an animated bar for one that
        # ended without a total would look busy
        bar.set_class(rec.status in WAITING or not total and (ended or rec.status not in LIVE), "hidden")
        line = self.query_one("#step-line", Static)
        text = step_line(progress) if progress is not None else ""
        eta = run_eta(state, time.time()) if rec.status in LIVE else None
        if eta is not None:
            text += (" · " if text else "") + f"run ETA {fmt_eta(eta)}"
        line.update(text)
        line.display = bool(text)

    def on_unmount(self) -> None:
        self.dashboard.unpin(self.run_id)  # the view follows the run only if it shows it elsewhere

    def _show_log_source(self, log: RunLog) -> None:
        other = STREAMS[1 - STREAMS.index(self.stream)]
        where = "following" if log.following else "scrolled up (End or G follows)"
        lines = log.file_lines
        self.query_one("#log-source", Static).update(
            f"[b]{self.stream}.log[/b] · {lines} line{'s' if lines != 1 else ''} · {where} · t: {other}.log"
        )

    # ------------------------------------------------------------------ layout

    def on_resize(self, event: Resize) -> None:
        if self._ready:
            self._layout_charts()
            self._fill_artifacts()

    def _layout_charts(self) -> None:
        self.query_one("#chart-grid").set_class(self.size.height < COMPACT_ROWS, "compact")

    def _fill_artifacts(self) -> None:
        """Artifacts with paths relative to the run dir, cut in the middle to the width there is."""
        table = self.query_one(ArtifactTable)
        kind_w = max((len(a.kind) for a in self._artifacts), default=4)
        room = max(self.size.width - kind_w - 10, 20)  # borders, cell padding, scrollbar
        path_w = min(max((len(a.path) for a in self._artifacts), default=4), max(room * 2 // 3, 16))
        summary_w = max(room - path_w, 8)
        cursor = table.cursor_row
        table.clear()
        for item in self._artifacts:
            summary = item.summary
            text = (
                summary if isinstance(summary, str) else one_line_json(summary, summary_w) if summary else ""
            )
            table.add_row(plain(item.kind), plain(cut_path(item.path, path_w)), plain(text))
        if self._artifacts:
            table.move_cursor(row=min(cursor, len(self._artifacts) - 1))

    # ------------------------------------------------------------------ tabs and focus

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self._focus_tab(event.pane.id)

    def _focus_tab(self, tab: str) -> None:
        """Put the keys (j k g G Home End) where the reader is: the active tab's scrollable content."""
        target = self.FOCUS.get(tab)
        if target is not None:
            self.query_one(target).focus()  # type: ignore[call-overload]

    def action_tab(self, tab: str) -> None:
        self.query_one("#run-tabs", TabbedContent).active = tab
        self._focus_tab(tab)

    def action_cycle_tab(self, delta: int) -> None:
        tabs = self.query_one("#run-tabs", TabbedContent)
        index = self.TABS.index(tabs.active) if tabs.active in self.TABS else 0
        self.action_tab(self.TABS[(index + delta) % len(self.TABS)])

    # ------------------------------------------------------------------ log

    def _show_stream(self, stream: str) -> None:
        self.stream = stream
        log = self.query_one(RunLog)
        if self._run_dir is not None:
            log.follow(self._run_dir / f"{stream}.log")
        self.query_one("#run-tabs", TabbedContent).get_tab("log").label = f"Log · {stream}"  # type: ignore[assignment]
        self._show_log_source(log)

    def action_toggle_stream(self) -> None:
        self._show_stream(STREAMS[1 - STREAMS.index(self.stream)])
        self.action_tab("log")

    def action_problem(self) -> None:
        """Jump to the first Traceback / NaN / OOM line, looking in the other stream when this one has none."""
        self.action_tab("log")
        log = self.query_one(RunLog)
        if log.jump_to_problem():
            self._show_log_source(log)
            return
        other = STREAMS[1 - STREAMS.index(self.stream)]
        if self._run_dir is not None and file_has_problem(self._run_dir / f"{other}.log"):
            self._show_stream(other)
            log.jump_to_problem()
            self._show_log_source(log)
            self.notify(f"first problem is in {other}.log", timeout=3)
            return
        self.notify("No Traceback, NaN or out-of-memory line in stdout.log or stderr.log", timeout=3)

    def action_stop(self) -> None:
        self.post_message(StopRequested([self.run_id]))

    def action_resume(self) -> None:
        self.post_message(ResumeRequested([self.run_id]))  # the app says why, when it may not
