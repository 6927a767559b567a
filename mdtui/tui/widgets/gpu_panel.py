"""Devices at a glance: memory, utilisation, which mdtui runs hold them, who else is on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from mdtui.system.gpus import cpu_device
from mdtui.tui.text import plain

WIDE = 110  # from this width the panel names runs by time and suffix, below by suffix only


def memory_bar(used: int, total: int, width: int = 10) -> Text:
    if total <= 0:
        return Text("")
    frac = min(1.0, max(0.0, used / total))
    filled = round(frac * width)
    style = "green" if frac < 0.5 else "yellow" if frac < 0.85 else "red"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


def run_suffixes(run_ids: Sequence[str], minimum: int) -> list[str]:
    """The shortest ends (at least ``minimum`` long) that tell ``run_ids`` apart.

    Run ids share their date and often their minute (``20261201-160714-…``); the end is what differs,
    and every verb accepts a unique suffix of a run id.
    """
    length = minimum
    longest = max((len(r) for r in run_ids), default=0)
    while length < longest and len({r[-length:] for r in run_ids}) < len(set(run_ids)):
        length += 1
    return [r[-length:] if len(r) > length else r for r in run_ids]


def describe_device(device: Any, holders: Sequence[str], suffix: int = 11) -> list[Any]:
    if device.id == "cpu":
        mem = Text("host memory", style="dim")
        util = ""
    else:
        mem = memory_bar(device.memory_used_mb, device.memory_total_mb)
        mem += Text(f" {device.memory_used_mb / 1024:.1f}/{device.memory_total_mb / 1024:.0f}G")
        util = f"{device.utilization}%"
    foreign = [p for p in getattr(device, "processes", ()) if not getattr(p, "mdtui", False)]
    others = ", ".join(sorted({f"{p.owner}" for p in foreign})) if foreign else ""
    runs = ", ".join(run_suffixes(list(holders), suffix)) if holders else ""
    return [Text(device.id, style="bold"), plain(device.name), mem, util, plain(runs), plain(others)]


def shown_devices(devices: Sequence[Any], holders: dict[str, tuple[str, ...]]) -> list[Any]:
    """The devices, plus the CPU whenever mdtui runs are on it (fake or real GPUs present)."""
    out = list(devices)
    if holders.get("cpu") and devices and not any(d.id == "cpu" for d in devices):
        out.append(cpu_device())
    return out


class GpuPanel(Static):
    """A compact table, one line per device; CPU appears as a device when there is no GPU or a run uses it."""

    DEFAULT_CSS = """
    GpuPanel { height: 3; max-height: 10; border-top: solid $primary-darken-2; }
    """

    rows: list[list[Any]] = []  # what is shown, for tests and the palette

    def show(self, devices: Sequence[Any], holders: dict[str, tuple[str, ...]]) -> None:
        suffix = 11 if (self.size.width or self.app.size.width) >= WIDE else 4
        devices = shown_devices(devices, holders)
        rows = [describe_device(device, holders.get(device.id, ()), suffix) for device in devices]
        if rows == self.rows and rows:
            return  # an update re-lays out the screen: only when something changed
        self.rows = rows
        table = Table(box=None, expand=True, pad_edge=False, show_edge=False, header_style="bold dim")
        fixed = {"dev": 4, "memory": 19, "util": 5}
        # the flexible columns share the rest in proportion to what they hold: an empty "mdtui runs"
        # column must not squeeze the device names to "NVIDIA …"
        flexible = {"name": (1, 4), "mdtui runs": (4, 10), "others": (5, 6)}  # cell index, least ratio
        for name in ("dev", "name", "memory", "util", "mdtui runs", "others"):
            if name in fixed:
                table.add_column(name, width=fixed[name], no_wrap=True)
            else:
                index, least = flexible[name]
                ratio = max([least, *(len(str(cells[index])) for cells in rows)])
                table.add_column(name, ratio=ratio, no_wrap=True, overflow="ellipsis")
        for cells in self.rows:
            table.add_row(*cells)
        if not devices:
            table.add_row("–", "querying devices…", "", "", "", "")
        # its height said, not measured: Textual caches a measured height per width, and an update
        # made while that cache was stale (seen at start-up, under load) left the panel one row short,
        # hiding the last device, until the terminal was resized
        self.styles.height = 2 + max(1, len(self.rows))  # the border, the header, one line a device
        self.update(table)
