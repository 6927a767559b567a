"""Devices at a glance: memory, utilisation, which mdtui runs hold them, who else is on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static


def memory_bar(used: int, total: int, width: int = 10) -> Text:
    if total <= 0:
        return Text("")
    frac = min(1.0, max(0.0, used / total))
    filled = round(frac * width)
    style = "green" if frac < 0.5 else "yellow" if frac < 0.85 else "red"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


def describe_device(device: Any, holders: Sequence[str]) -> list[Any]:
    if device.id == "cpu":
        mem = Text("host memory", style="dim")
        util = ""
    else:
        mem = memory_bar(device.memory_used_mb, device.memory_total_mb)
        mem += Text(f" {device.memory_used_mb / 1024:.1f}/{device.memory_total_mb / 1024:.0f}G")
        util = f"{device.utilization}%"
    foreign = [p for p in getattr(device, "processes", ()) if not getattr(p, "mdtui", False)]
    others = ", ".join(sorted({f"{p.owner}" for p in foreign})) if foreign else ""
    runs = ", ".join(holders) if holders else ""
    return [Text(device.id, style="bold"), device.name, mem, util, runs, others]


class GpuPanel(Static):
    """A compact table, one line per device; CPU appears as a device when there is no GPU."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; max-height: 10; border-top: solid $primary-darken-2; }
    """

    rows: list[list[Any]] = []  # what is shown, for tests and the palette

    def show(self, devices: Sequence[Any], holders: dict[str, tuple[str, ...]]) -> None:
        table = Table(box=None, expand=True, pad_edge=False, show_edge=False, header_style="bold dim")
        fixed = {"dev": 4, "memory": 19, "util": 5}
        for name, ratio in (
            ("dev", 0),
            ("name", 3),
            ("memory", 0),
            ("util", 0),
            ("mdtui runs", 4),
            ("others", 3),
        ):
            if name in fixed:
                table.add_column(name, width=fixed[name], no_wrap=True)
            else:
                table.add_column(name, ratio=ratio, no_wrap=True, overflow="ellipsis")
        rows = [describe_device(device, holders.get(device.id, ())) for device in devices]
        if rows == self.rows and rows:
            return  # an update re-lays out the screen: only when something changed
        self.rows = rows
        for cells in self.rows:
            table.add_row(*cells)
        if not devices:
            table.add_row("–", "querying devices…", "", "", "", "")
        self.update(table)
