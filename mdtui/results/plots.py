"""PNG plots of runs: training curves, per-class accuracy, and overlays of several runs.

Built from the event reducer's ``RunState`` (never from torch objects). matplotlib is imported
inside the functions only, through the object-oriented ``Figure`` + Agg canvas API: no pyplot global
state, no display needed, safe in the supervisor and in tests running in parallel.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.schema.events import RunState

# `mdtui plot --metric` names -> EpochRecord attributes.
EPOCH_METRICS = {
    "train.loss": "train_loss",
    "train.acc1": "train_acc1",
    "eval.loss": "eval_loss",
    "eval.acc1": "eval_acc1",
    "eval.acc5": "eval_acc5",
    "lr": "lr",
    "seconds": "seconds",
}


@dataclass(frozen=True)
class Series:
    """One line of a plot: its legend label and (x, y) points."""

    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]


def metric_names(state: RunState | None = None) -> list[str]:
    """Metric names ``metric_series`` accepts (plus the extra train losses ``state`` recorded)."""
    names = list(EPOCH_METRICS)
    if state is not None:
        extra = sorted({f"train.{k}" for e in state.epochs for k in e.extra})
        names += [n for n in extra if n not in names]
    return names


def metric_series(state: RunState, metric: str, label: str = "") -> Series:
    """Per-epoch values of ``metric`` (x is the 1-based epoch); epochs without a value are skipped.

    Raises KeyError naming the metrics that exist when ``metric`` is unknown.
    """
    attr = EPOCH_METRICS.get(metric)
    extra_key = metric.removeprefix("train.") if metric.startswith("train.loss_") else None
    if attr is None and extra_key is None:
        raise KeyError(f"unknown metric {metric!r}; choose one of: {', '.join(metric_names(state))}")
    xs: list[float] = []
    ys: list[float] = []
    for record in sorted(state.epochs, key=lambda e: e.epoch):
        value = getattr(record, attr) if attr else record.extra.get(extra_key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            xs.append(record.epoch + 1)
            ys.append(float(value))
    return Series(label or state.run_id or metric, tuple(xs), tuple(ys))


def _save(fig: Any, path: Path) -> Path:
    """Render ``fig`` to ``path`` atomically (temp file + rename): readers never see half a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are for the whole team
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    from mdtui.system.fs import current_umask

    return current_umask()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    # Fixed margins: constrained layout costs half the render time, and the supervisor pays it.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.14, top=0.86, wspace=0.28)
    return fig


def _line(ax: Any, series: Series, **style: Any) -> bool:
    if not series.xs:
        return False
    marker = "o" if len(series.xs) <= 30 else None
    ax.plot(series.xs, series.ys, label=series.label, marker=marker, markersize=3, **style)
    return True


def plot_curves(state: RunState, path: Path, title: str = "") -> Path:
    """Train/eval loss, train/eval acc1 and the learning rate per epoch, side by side."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(13, 3.8)
    fig.subplots_adjust(left=0.05, right=0.98)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    for ax, metrics, ylabel in (
        (loss_ax, ("train.loss", "eval.loss"), "loss"),
        (acc_ax, ("train.acc1", "eval.acc1"), "acc1 (%)"),
        (lr_ax, ("lr",), "learning rate"),
    ):
        drawn = [_line(ax, metric_series(state, m, label=m)) for m in metrics]
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if any(drawn) and len(metrics) > 1:
            ax.legend(fontsize="small")
    if state.best_acc1 is not None and state.best_epoch is not None:
        acc_ax.axvline(state.best_epoch + 1, color="grey", linestyle=":", linewidth=1)
        acc_ax.set_title(f"best {state.best_acc1:.2f}% at epoch {state.best_epoch + 1}", fontsize="small")
    lr_values = metric_series(state, "lr").ys
    if lr_values and min(lr_values) > 0 and max(lr_values) / min(lr_values) > 50:
        lr_ax.set_yscale("log")  # step schedules span decades; a linear axis hides the tail
    fig.suptitle(title or state.run_id)
    return _save(fig, path)


def plot_per_class(
    per_class: Sequence[float], train_counts: Sequence[int], path: Path, title: str = ""
) -> Path:
    """Per-class accuracy (bars) against the training count (line, log scale), head classes first."""
    order = sorted(range(len(per_class)), key=lambda c: (-train_counts[c], c))
    fig = _figure(max(6.0, min(16.0, 0.18 * len(order) + 4)), 4)
    ax = fig.subplots()
    positions = list(range(len(order)))
    ax.bar(positions, [per_class[c] for c in order], color="tab:blue", alpha=0.8, label="accuracy")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlabel("class (sorted by training count)")
    if len(order) <= 30:
        ax.set_xticks(positions, [str(c) for c in order])
    count_ax = ax.twinx()
    count_ax.plot(
        positions, [train_counts[c] for c in order], color="tab:red", marker=".", label="train count"
    )
    count_ax.set_ylabel("training images")
    if min(train_counts) > 0:
        count_ax.set_yscale("log")
    handles = [*ax.get_legend_handles_labels()[0], *count_ax.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    fig.suptitle(title or "per-class accuracy")
    return _save(fig, path)


def plot_overlay(series: Sequence[Series], path: Path, metric: str, title: str = "") -> Path:
    """Several runs' ``metric`` in one axes (``mdtui plot``)."""
    fig = _figure(8, 4.5)
    from matplotlib.ticker import MaxNLocator

    ax = fig.subplots()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for item in series:
        _line(ax, item)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or metric)
    return _save(fig, path)
