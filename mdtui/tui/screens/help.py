"""Every key, in one place (generated from the bindings, so it cannot drift)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS_HELP = """\
[b]Moving[/b]
  j / k, ↑ / ↓     move          enter    open run / latest run of experiment
  tab             next panel     escape   back, clear filter
  1 / 2           Experiments / Runs tab
[b]Selecting[/b]
  space           select / unselect row          /        filter (type, enter)
  s               sort by next column            S        reverse sort
[b]Running[/b]
  r               run selection now (devices chosen automatically; queued when all busy)
  g               pick devices, then run
  a               add selection to the queue
  K               stop selected runs (SIGTERM, SIGKILL after the grace period)
  [ / ]           move a queued run up / down     x   cancel a queued run
[b]Looking[/b]
  l               logs of the run (in the log: p jumps to the first Traceback / NaN / OOM)
  c               compare selected runs (only differing config keys, overlaid curves)
  e               edit experiments.toml in $EDITOR, then reload
  ctrl+p          command palette                 ?        this help
  q               quit (runs keep running; the queue keeps going)
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(KEYS_HELP, id="help-text")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
