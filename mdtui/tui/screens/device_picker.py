"""Choose devices for a run: free memory, utilisation and who is already on each. The CPU is always offered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from mdtui.tui.text import plain, visible
from mdtui.tui.widgets.device_list import DeviceList
from mdtui.tui.widgets.gpu_panel import run_suffixes


def device_label(device: Any, holders: Sequence[str]) -> str:
    if device.id == "cpu":
        label = "cpu  host processor (CPU runs share its cores)"
        return label + (f"  mdtui: {', '.join(holders)}" if holders else "")
    free = device.memory_free_mb / 1024
    owners = sorted({p.owner for p in device.processes})
    parts = [f"{device.id:>3}  {device.name[:18]:<18} free {free:5.1f} GiB  util {device.utilization:3d}%"]
    if holders:
        parts.append(f"mdtui: {', '.join(holders)}")
    if owners:
        parts.append(f"users: {', '.join(owners)}")
    return visible("  ".join(parts))


def picker_entries(devices: Sequence[Any], holders: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """(device id, label) for every device, the CPU last (also beside fake or real GPUs).

    Runs are named by the shortest ends that tell them apart, as in the GPU panel, so a label fits one
    line at 80 columns."""
    every = sorted({run for runs in holders.values() for run in runs})
    short = dict(zip(every, run_suffixes(every, 4), strict=True))

    def held(device_id: str) -> list[str]:
        return [short[run] for run in holders.get(device_id, ())]

    entries = [(d.id, device_label(d, held(d.id))) for d in devices if d.id != "cpu"]
    return [*entries, ("cpu", device_label(_Cpu(), held("cpu")))]


class _Cpu:
    id = "cpu"


class DevicePickerDialog(ModalScreen[list[str] | None]):
    """Returns the chosen device ids, or None when cancelled."""

    BINDINGS = [
        # priority: the list binds enter to "select" itself; space picks there
        Binding("enter", "confirm", "Run on picked", priority=True, id="picker.confirm"),
        Binding("escape,q", "cancel", "Cancel", id="picker.cancel"),
    ]

    def __init__(self, devices: Sequence[Any], holders: dict[str, tuple[str, ...]], names: list[str]) -> None:
        super().__init__()
        self.devices = list(devices)
        self.holders = holders
        self.names = names

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            shown = ", ".join(self.names[:3]) + (
                f" and {len(self.names) - 3} more" if len(self.names) > 3 else ""
            )
            yield Static(plain(f"Devices for {shown}"), id="question")
            yield Static(
                # one line inside an 80-column screen's dialog
                "space: pick [x] / unpick · enter: run on them · escape: cancel",
                id="details",
                markup=False,
            )
            yield DeviceList(picker_entries(self.devices, self.holders), id="device-list")

    def on_mount(self) -> None:
        self.query_one(DeviceList).focus()

    def action_confirm(self) -> None:
        devices = self.query_one(DeviceList)
        chosen = list(devices.picked)
        if not chosen and devices.current is not None:
            chosen = [devices.current]
        if "cpu" in chosen and len(chosen) > 1:
            self.app.notify("cpu cannot be combined with GPUs: unpick one", severity="error")
            return
        self.dismiss(chosen or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
