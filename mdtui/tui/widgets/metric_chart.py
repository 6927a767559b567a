"""A line chart of one or more series, redrawn only when its data changed."""

from __future__ import annotations

from textual_plotext import PlotextPlot

Series = dict[str, tuple[list[float], list[float]]]


class MetricChart(PlotextPlot):
    """Wraps ``PlotextPlot`` so callers hand over data, never plotext calls."""

    DEFAULT_CSS = """
    MetricChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str, xlabel: str = "epoch", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._title = title
        self._xlabel = xlabel
        self._series: Series = {}

    def on_mount(self) -> None:
        self._draw()

    def show(self, series: Series) -> None:
        """Replace the plotted series; a no-op when nothing changed (no wasted redraws)."""
        if series == self._series:
            return
        self._series = {k: (list(x), list(y)) for k, (x, y) in series.items()}
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self._title)
        plt.xlabel(self._xlabel)
        drawn = False
        for label, (xs, ys) in self._series.items():
            points = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None]
            if points:
                plt.plot([p[0] for p in points], [p[1] for p in points], label=label, marker="braille")
                drawn = True
        if not drawn:
            plt.text("no data yet", 0.5, 0.5)
        self.refresh()
