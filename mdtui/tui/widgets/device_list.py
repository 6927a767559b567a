"""A list of devices to pick from: ``[x]`` picked, ``[ ]`` not (a glyph, not only a colour)."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import OptionList
from textual.widgets.option_list import Option

PICKED = "[x] "
UNPICKED = "[ ] "


class DeviceList(OptionList):
    """Options are (device id, label); space picks or unpicks the highlighted device."""

    BINDINGS = [
        Binding("space", "toggle", "Pick", id="devices.pick"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "first", "First", show=False),
        Binding("G", "last", "Last", show=False),
    ]

    def __init__(self, entries: list[tuple[str, str]], **kwargs: object) -> None:
        self.entries = list(entries)
        self.picked: list[str] = []
        super().__init__(*(Option(self._prompt(d, label), id=d) for d, label in self.entries), **kwargs)  # type: ignore[arg-type]

    def _prompt(self, device_id: str, label: str) -> Text:
        picked = device_id in self.picked
        return Text(PICKED if picked else UNPICKED, style="bold green" if picked else "dim") + Text(label)

    @property
    def current(self) -> str | None:
        index = self.highlighted
        return self.entries[index][0] if index is not None and 0 <= index < len(self.entries) else None

    def action_toggle(self) -> None:
        index = self.highlighted
        if index is None:
            return
        device_id, label = self.entries[index]
        if device_id in self.picked:
            self.picked.remove(device_id)
        else:
            self.picked.append(device_id)
        self.replace_option_prompt_at_index(index, self._prompt(device_id, label))
