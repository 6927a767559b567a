"""A vertical scroll view that also takes the keys people know from less and vim: j k g G."""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import VerticalScroll

# Home/End, arrows and page keys come with every scrollable container.
VI_SCROLL_KEYS = [
    Binding("j", "scroll_down", "Down", show=False),
    Binding("k", "scroll_up", "Up", show=False),
    Binding("g", "scroll_home", "Top", show=False),
    Binding("G", "scroll_end", "Bottom", show=False),
]


class ViScroll(VerticalScroll, can_focus=True):
    BINDINGS = VI_SCROLL_KEYS
