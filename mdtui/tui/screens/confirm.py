"""A yes/no question that lists what it is about to do. Cancel is the default: enter never kills by accident."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from mdtui.tui.text import plain

MAX_DETAILS = 12


class ConfirmDialog(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape,q", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(
        self, question: str, details: list[str] | None = None, yes: str = "Yes", *, danger: bool = True
    ) -> None:
        super().__init__()
        self.question = question
        self.details = details or []
        self.yes = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            # Static (not Label): the question wraps at word boundaries instead of being cut
            yield Static(plain(self.question), id="question")
            if self.details:
                shown = self.details[:MAX_DETAILS]
                more = len(self.details) - len(shown)
                text = "\n".join(shown) + (f"\n… and {more} more" if more > 0 else "")
                yield Static(plain(text), id="details")
            with Horizontal(id="buttons"):
                yield Button("Cancel (n)", id="no")
                yield Button(f"{self.yes} (y)", variant="error" if self.danger else "primary", id="yes")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # enter answers "no" unless the user moves on purpose

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
