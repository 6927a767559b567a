"""Two or more runs side by side: the config keys that differ, the results, and their curves overlaid.

The table is a Rich table in a scroll view: columns take the width their content needs and long
values wrap instead of being cut, so every run's values stay on screen at 80 columns. A block that
one run has and another lacks entirely (``doctor``: twenty keys, all "(unset)" on one side) is one row;
``a`` shows every key, equal ones included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from mdtui.results.compare import MISSING, compare_runs, comparison_rows, flatten_config, format_config_value
from mdtui.system.fs import read_json
from mdtui.system.text import distinct_cuts
from mdtui.tui.text import visible
from mdtui.tui.widgets.metric_chart import MetricChart
from mdtui.tui.widgets.vi_scroll import ViScroll

WIDE = 100  # from this width the chart legends name the experiments too
LEGEND_NAME = 24  # characters of an experiment's name in a chart legend
IGNORED = ("run_id", "experiment")  # differ by construction; the column headers name them


def config_rows(flats: list[dict[str, Any]], *, show_all: bool = False) -> list[tuple[str, list[str], bool]]:
    """(key, value per run, differs) rows. Without ``show_all``: only keys that differ, and a block
    (``doctor.*``) that some runs lack entirely folded into one row saying how many keys it holds."""
    keys = sorted({k for flat in flats for k in flat} - set(IGNORED))
    folds = (
        set() if show_all else {k.split(".", 1)[0] for k in keys if "." in k and _absent_somewhere(flats, k)}
    )
    rows: list[tuple[str, list[str], bool]] = []
    for key in keys:
        block = key.split(".", 1)[0]
        if block in folds:  # the block's own key (`doctor = null`) and every key in it: one row
            if not any(row[0] == f"{block}.*" for row in rows):
                rows.append((f"{block}.*", [_block_summary(flat, block) for flat in flats], True))
            continue
        values = [flat.get(key, MISSING) for flat in flats]
        differs = any(v != values[0] or type(v) is not type(values[0]) for v in values[1:])
        if differs or show_all:
            rows.append((key, [format_config_value(v) for v in values], differs))
    return rows


def _absent_somewhere(flats: list[dict[str, Any]], key: str) -> bool:
    prefix = key.split(".", 1)[0] + "."
    present = [any(k.startswith(prefix) for k in flat) for flat in flats]
    return any(present) and not all(present)


def _block_summary(flat: dict[str, Any], block: str) -> str:
    count = sum(1 for k in flat if k.startswith(block + "."))
    return f"{count} key{'s' if count != 1 else ''}" if count else "(unset)"


def run_labels(run_ids: list[str], width: int) -> list[str]:
    """Run ids for column headers: whole when they fit, else ``…`` and the shortest ends that differ
    (ids differ at their random tail: ``…-aaaa``), never cut in the middle of a header line."""
    if all(len(r) <= width for r in run_ids):
        return list(run_ids)
    for keep in range(4, max(len(r) for r in run_ids) + 1):
        tails = ["…" + r[-keep:] if len(r) > keep else r for r in run_ids]
        if len(set(tails)) == len(tails):
            return tails
    return list(run_ids)


class CompareScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back", id="compare.back"),
        Binding(
            "a", "toggle_all", "All keys", id="compare.all", tooltip="Show every config key, equal ones too"
        ),
    ]
    CSS = """
    CompareScreen #diff-scroll { height: 1fr; border-left: outer $panel; }
    CompareScreen #diff-scroll:focus { border-left: outer $accent; }
    CompareScreen #cmp-table { width: 100%; height: auto; padding: 0 1; }
    CompareScreen #compare-charts { height: 45%; min-height: 8; }
    """

    def __init__(self, run_ids: list[str], dashboard: Any) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.dashboard = dashboard
        self.show_all = False
        self.labels: dict[str, str] = {}
        self._records: list[Any] = []
        self._flats: list[dict[str, Any]] = []
        self._metrics: list[list[str]] = []
        self.table: Table | None = None
        self._ready = False  # mounted: the app's timer may call refresh_view before that

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            with ViScroll(id="diff-scroll"):
                yield Static("", id="cmp-table")
            with Horizontal(id="compare-charts"):
                yield MetricChart("eval acc1 per epoch", id="cmp-acc1")
                yield MetricChart("train loss per epoch", id="cmp-loss")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        store = self.dashboard.store
        self._records = [r for r in (store.get(i) for i in self.run_ids) if r is not None]
        self.title = (
            f"compare {len(self._records)} runs"  # their ids head the columns, whole or by their ends
        )
        self.sub_title = ""
        configs = [read_json(Path(r.run_dir) / "config.json") or {} for r in self._records]
        self._flats = [flatten_config(c) for c in configs]
        comparison = compare_runs(self._records, configs)
        _, rows = comparison_rows(comparison)
        self._metrics = rows[len(comparison.config_rows) :]
        # chart legends: experiment names cut (in the middle, keeping what tells them apart) so that
        # each entry fits half an 80-column screen whole, and the run id's end
        names = distinct_cuts([r.experiment for r in self._records], LEGEND_NAME)
        self.labels = {r.run_id: f"{names[r.experiment]} {r.run_id[-4:]}" for r in self._records}
        self._ready = True
        self.query_one("#diff-scroll").focus()
        # the table and the legends need the laid-out width: both are drawn on the first Resize,
        # which follows the mount (is_mounted is still False here: a table drawn now was skipped,
        # and the charts waited for the app's next refresh, showing "no data yet" till then)

    def _draw_table(self) -> None:
        """The table, laid out at the width there is (a Rich table in a Static would not get its height)."""
        if not self.is_mounted:
            return
        # less the Static's padding and a vertical scrollbar's room: a table as wide as the view
        # wrapped its header rule onto a line of its own once the rows needed the scrollbar
        width = max(self.query_one("#diff-scroll").scrollable_content_region.width - 4, 20)
        self.table = self._table(width)
        console = Console(width=width, force_terminal=True, color_system="truecolor", legacy_windows=False)
        with console.capture() as captured:
            console.print(self.table)
        self.query_one("#cmp-table", Static).update(Text.from_ansi(captured.get().rstrip("\n")))

    def _table(self, width: int) -> Table:
        rows = config_rows(self._flats, show_all=self.show_all)
        keys = [key for key, _, _ in rows] + [row[0] for row in self._metrics] + ["results (Δ)"]
        key_width = max(len(k) for k in keys)
        ids = run_labels(
            [r.run_id for r in self._records], (width - key_width) // max(len(self._records), 1) - 2
        )
        which = "every key (dim: equal)" if self.show_all else "only the keys that differ"
        table = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            caption=f"config: {which} (a: toggle) · results: Δ against the first run",
            caption_justify="left",
        )
        table.add_column("", style="bold", no_wrap=True, min_width=key_width)
        # each run's column: its id (or its end) over its experiment's name, cut to the column's width
        # so that the names still tell the runs apart (folded, a long name took five header lines)
        column = max((width - key_width) // max(len(self._records), 1) - 2, 8)
        names = distinct_cuts([visible(r.experiment) for r in self._records], column)
        for rec, label in zip(self._records, ids, strict=True):
            table.add_column(Text(f"{visible(label)}\n{names[visible(rec.experiment)]}"), overflow="fold")
        blank = [""] * len(self._records)
        table.add_row(Text("config", style="bold underline"), *blank)
        if not any(differs for _, _, differs in rows):
            table.add_row(Text("(identical apart from run ids)", style="dim"), *blank)
        for key, values, differs in rows:
            style = "" if differs else "dim"
            table.add_row(Text(visible(key), style=style), *(Text(visible(v), style=style) for v in values))
        table.add_row(*([""] * (len(self._records) + 1)))
        table.add_row(Text("results (Δ)", style="bold underline"), *blank)
        for row in self._metrics:
            table.add_row(*(Text(visible(cell)) for cell in row))
        return table

    def on_resize(self, event: Resize) -> None:
        self._draw_table()
        self.refresh_view()

    def refresh_view(self, snapshot: Any = None) -> None:
        if not self._ready:
            return
        acc: dict[str, tuple[list[float], list[float]]] = {}
        loss: dict[str, tuple[list[float], list[float]]] = {}
        for run_id in self.run_ids:
            state = self.dashboard.run_state(run_id)
            if state is None:
                continue
            xs = [float(e.epoch + 1) for e in state.epochs]
            # narrow: the legend names runs by their ids' ends, as the table's headers above do, so
            # that the legend stays on two lines and leaves the charts their height
            label = self.labels.get(run_id, run_id) if self.size.width >= WIDE else f"…{run_id[-4:]}"
            acc[label] = (xs, [e.eval_acc1 for e in state.epochs])  # type: ignore[misc]
            loss[label] = (xs, [e.train_loss for e in state.epochs])  # type: ignore[misc]
        self.query_one("#cmp-acc1", MetricChart).show(acc)
        self.query_one("#cmp-loss", MetricChart).show(loss)

    def on_unmount(self) -> None:
        for run_id in self.run_ids:  # followed for these charts only: the view follows what it shows
            self.dashboard.unpin(run_id)

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self._draw_table()
