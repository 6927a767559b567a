"""Choose devices for a run: free memory, utilisation and who is already on each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList
from textual.widgets.selection_list import Selection


def device_label(device: Any, holders: Sequence[str]) -> str:
    if device.id == "cpu":
        return "cpu   host processor"
    free = device.memory_free_mb / 1024
    owners = sorted({p.owner for p in device.processes})
    parts = [f"{device.id:>3}  {device.name[:18]:<18} free {free:5.1f} GiB  util {device.utilization:3d}%"]
    if holders:
        parts.append(f"mdtui: {', '.join(holders)}")
    if owners:
        parts.append(f"users: {', '.join(owners)}")
    return "  ".join(parts)


class DevicePickerDialog(ModalScreen[list[str] | None]):
    """Returns the chosen device ids, or None when cancelled."""

    BINDINGS = [
        # priority: the SelectionList binds enter to "toggle" itself; space toggles here
        Binding("enter", "confirm", "Run on selected", priority=True, id="picker.confirm"),
        Binding("escape", "cancel", "Cancel", id="picker.cancel"),
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
            yield Label(f"Devices for {shown}  (space toggles, enter runs, escape cancels)")
            yield SelectionList[str](
                *(Selection(device_label(d, self.holders.get(d.id, ())), d.id) for d in self.devices),
                id="device-list",
            )

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def action_confirm(self) -> None:
        chosen = list(self.query_one(SelectionList).selected)
        if not chosen:
            current = self.query_one(SelectionList).highlighted
            if current is not None:
                chosen = [self.devices[current].id]
        if "cpu" in chosen and len(chosen) > 1:
            self.notify("cpu cannot be combined with GPUs", severity="error")
            return
        self.dismiss(chosen or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
