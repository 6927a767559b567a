"""Two or more runs side by side: only the config keys that differ, and their curves overlaid."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from mdtui.results.compare import compare_runs, comparison_rows
from mdtui.tui.widgets.metric_chart import MetricChart

if TYPE_CHECKING:
    from mdtui.tui.app import MdtuiApp


class CompareScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="compare.back")]

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.labels: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield DataTable(id="diff", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="compare-charts"):
                yield MetricChart("eval acc1", id="cmp-acc1")
                yield MetricChart("train loss", id="cmp-loss")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        app: MdtuiApp = self.app  # type: ignore[assignment]
        store = app.dashboard.store
        records = [r for r in (store.get(i) for i in self.run_ids) if r is not None]
        self.title = "compare " + ", ".join(r.run_id for r in records)
        self.sub_title = f"{len(records)} runs"
        comparison = compare_runs(records)
        header, rows = comparison_rows(comparison)
        table = self.query_one("#diff", DataTable)
        table.add_columns(*(Text(h.replace("\n", " · "), style="bold") for h in header))
        blank = [""] * (len(header) - 1)
        configs = len(comparison.config_rows)
        table.add_row(Text("config", style="bold"), *blank)
        if not configs:
            table.add_row(Text("(identical apart from run ids)", style="dim"), *blank)
        for i, row in enumerate(rows):
            if i == configs:
                table.add_row(Text("results", style="bold"), *blank)
            table.add_row(*(Text(cell) for cell in row))  # Text: "[x=1]" in a value is not markup
        self.labels = {r.run_id: f"{r.experiment} {r.run_id[-4:]}" for r in records}
        self.refresh_view()

    def refresh_view(self) -> None:
        app: MdtuiApp = self.app  # type: ignore[assignment]
        acc: dict[str, tuple[list[float], list[float]]] = {}
        loss: dict[str, tuple[list[float], list[float]]] = {}
        for run_id in self.run_ids:
            state = app.dashboard.run_state(run_id)
            if state is None:
                continue
            xs = [float(e.epoch + 1) for e in state.epochs]
            label = self.labels.get(run_id, run_id)
            acc[label] = (xs, [e.eval_acc1 for e in state.epochs])  # type: ignore[misc]
            loss[label] = (xs, [e.train_loss for e in state.epochs])  # type: ignore[misc]
        self.query_one("#cmp-acc1", MetricChart).show(acc)
        self.query_one("#cmp-loss", MetricChart).show(loss)
