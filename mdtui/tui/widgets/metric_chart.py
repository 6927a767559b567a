"""A line chart of one or more series, redrawn only when its data changed.

The title and legend sit on a line of their own above the plot (plotext draws its legend inside
the plot area, over the lines). With no data there are no axes to invent: the chart says so.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from mdtui.tui.text import markup_escape as escape

Series = dict[str, tuple[list[float], list[float]]]

# One colour per series, in order; the legend uses the same ones.
COLORS: tuple[tuple[int, int, int], ...] = (
    (80, 160, 255),
    (255, 160, 40),
    (90, 200, 110),
    (230, 90, 200),
    (240, 220, 80),
    (100, 220, 220),
)
NO_DATA = "no data yet"


def legend_markup(title: str, labels: list[str], width: int | None = None) -> str:
    """``title  ━━ a  ━━ b`` with each mark in its series' colour (labels escaped: they are user text).

    With ``width``, lines are broken between entries only, never inside one: a mark stays with its
    whole label (Rich would wrap at any space, no-break ones included, leaving a mark alone)."""
    colors = COLORS * (len(labels) // len(COLORS) + 1)
    entries = [(len(title), f"[b]{escape(title)}[/b]")]
    entries += [
        (len(label) + 3, f"[rgb({r},{g},{b})]━━[/] {escape(label)}")
        for label, (r, g, b) in zip(labels, colors, strict=False)
    ]
    lines: list[list[str]] = [[]]
    used = 0
    for size, markup in entries:
        if width is not None and lines[-1] and used + 2 + size > width:
            lines.append([])
            used = 0
        used += size + (2 if lines[-1] else 0)
        lines[-1].append(markup)
    return "\n".join("  ".join(line) for line in lines)


class MetricChart(Vertical):
    """Callers hand over data, never plotext calls."""

    DEFAULT_CSS = """
    MetricChart { height: 1fr; min-height: 6; }
    MetricChart > .legend { height: auto; max-height: 4; padding: 0 1; }
    MetricChart > PlotextPlot { height: 1fr; }
    MetricChart > .empty { height: 1fr; content-align: center middle; color: $text-muted; }
    """

    def __init__(self, title: str, xlabel: str = "epoch", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._title = title
        self._xlabel = xlabel
        self._series: Series = {}
        self._labels: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(legend_markup(self._title, []), classes="legend")
        yield PlotextPlot()
        yield Static(NO_DATA, classes="empty")

    def on_mount(self) -> None:
        self._draw()

    @property
    def has_data(self) -> bool:
        return any(y is not None for _, ys in self._series.values() for y in ys)

    def show(self, series: Series) -> None:
        """Replace the plotted series; a no-op when nothing changed (no wasted redraws)."""
        if series == self._series:
            return
        self._series = {k: (list(x), list(y)) for k, (x, y) in series.items()}
        if self.is_mounted:
            self._draw()

    def _show_legend(self) -> None:
        width = self.size.width - 2 if self.size.width else None  # the legend's padding
        self.query_one(".legend", Static).update(legend_markup(self._title, self._labels, width))

    def on_resize(self) -> None:
        if self.is_mounted:
            self._show_legend()

    def _draw(self) -> None:
        plot = self.query_one(PlotextPlot)
        drawn = [
            (label, [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None])
            for label, (xs, ys) in self._series.items()
        ]
        drawn = [(label, points) for label, points in drawn if points]
        self._labels = [label for label, _ in drawn]
        self._show_legend()
        empty = self.query_one(".empty", Static)
        if drawn and all(len(points) == 1 for _, points in drawn) and len({p[0][0] for _, p in drawn}) == 1:
            # one point each (a run's first epoch): a lone dot on an invented axis says less than the values
            x = drawn[0][1][0][0]
            values = "  ".join(f"{label} {points[0][1]:.4g}" for label, points in drawn)
            empty.update(escape(f"{self._xlabel} {x:g}: {values}"))  # labels are user text
            plot.display, empty.display = False, True
            return
        empty.update(NO_DATA)
        plot.display = bool(drawn)
        empty.display = not drawn
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        for (_, points), color in zip(drawn, COLORS * (len(drawn) // len(COLORS) + 1), strict=False):
            plt.plot([p[0] for p in points], [p[1] for p in points], color=color, marker="braille")
        plot.refresh()
