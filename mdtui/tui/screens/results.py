"""RESULTS.md and ``mdtui report``, rendered as markdown inside the TUI.

Both are read in a worker thread (a report over many runs takes a moment) and read again with ``r``.
The screen takes the dashboard (plan and run store) it reads from; it never imports the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Markdown, TabbedContent, TabPane

from mdtui.results.log import results_log_path
from mdtui.results.report import ReportError, render_report
from mdtui.tui.text import visible
from mdtui.tui.widgets.vi_scroll import ViScroll

MAX_BYTES = 1 << 20  # a notebook grown past this is shown up to here; the file itself has the rest
TABS = ("results-log", "report")


def read_results_log(path: Path, limit: int = MAX_BYTES) -> str:
    """RESULTS.md as markdown, or a sentence saying why there is none yet."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        return f"*No {path.name} yet: it gets a line when a run finishes.*\n\n`{path}`"
    except OSError as exc:
        return f"*Cannot read {path}: {exc.strerror or exc}*"
    text = data[:limit].decode("utf-8", errors="replace")
    if len(data) > limit:
        text += f"\n\n*… cut at {limit >> 20} MiB: open {path.name} for the rest.*\n"
    return text


def shown_path(path: Path) -> str:
    """``path`` as short as it can be said: relative to the working directory when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def report_markdown(dashboard: Any) -> str:
    """What ``mdtui report`` prints for the whole plan, or a sentence saying why it cannot."""
    if dashboard.plan is None or dashboard.store is None:
        return "*No report: experiments.toml has errors (see the main screen).*"
    try:
        text = render_report(dashboard.store, dashboard.plan)
    except ReportError as exc:
        return f"*No report: {exc}*"
    return text if text.strip() else "*No completed runs yet: the report has nothing to show.*"


class ResultsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back", id="results.back"),
        Binding("r", "reload", "Reload", id="results.reload"),
        Binding("left_square_bracket", "cycle_tab(-1)", "Previous tab", show=False, id="results.prev"),
        Binding("right_square_bracket", "cycle_tab(1)", "Next tab", show=False, id="results.next"),
    ]
    CSS = """
    ResultsScreen #results-tabs { height: 1fr; }
    ResultsScreen ViScroll { border-left: outer $panel; }
    ResultsScreen ViScroll:focus { border-left: outer $accent; }
    """

    def __init__(self, dashboard: Any) -> None:
        super().__init__()
        self.dashboard = dashboard
        self.loaded = 0  # how many times both documents were read (tests wait on it)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="results-tabs"):
            with TabPane("RESULTS.md", id="results-log"), ViScroll(id="results-log-scroll"):
                yield Markdown("*reading…*", id="results-log-md")
            with TabPane("Report", id="report"), ViScroll(id="report-scroll"):
                yield Markdown("*reading…*", id="report-md")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "results"
        self.query_one("#results-log-scroll").focus()
        self.action_reload()

    def action_reload(self) -> None:
        self._read()

    @work(thread=True, exclusive=True, group="results", exit_on_error=False)
    def _read(self) -> None:
        store, plan = self.dashboard.store, self.dashboard.plan
        path = results_log_path(store, plan) if store is not None else None
        log = read_results_log(path) if path is not None else "*No run store yet.*"
        report = report_markdown(self.dashboard)
        self.app.call_from_thread(self._show, path, log, report)

    def _show(self, path: Path | None, log: str, report: str) -> None:
        self.sub_title = visible(shown_path(path)) if path is not None else ""
        self.query_one("#results-log-md", Markdown).update(log)
        self.query_one("#report-md", Markdown).update(report)
        self.loaded += 1

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self.query_one(f"#{event.pane.id}-scroll").focus()

    def action_cycle_tab(self, delta: int) -> None:
        tabs = self.query_one("#results-tabs", TabbedContent)
        index = TABS.index(tabs.active) if tabs.active in TABS else 0
        tabs.active = TABS[(index + delta) % len(TABS)]
        self.query_one(f"#{tabs.active}-scroll").focus()
