"""Every key, in one place (tests check that each bound key is listed here)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS_HELP = """\
[b]Main screen[/b]
  j k ↑ ↓    move                   1 2       Experiments / Runs tab
  enter      open run (an experiment opens its latest run)
  space      select / unselect      escape    clear filter or selection
  /          filter (enter keeps)   s S       sort by next column / reverse
  r          run selection now (free devices chosen; queued when all busy)
  g          choose devices (free memory, load, owners), then run
  a          add selection to the queue
  [ ]        move a queued run up / down    x   cancel a queued run
  P          pause / resume the queue (running runs carry on)
  K          stop selected runs: SIGTERM, SIGKILL after the grace period
  l          log of the run          c         compare selected runs
  e          edit experiments.toml in $EDITOR, then reload
  ctrl+p     command palette         ?         this help
  q          quit: runs and the queue keep going
[b]Run detail[/b]
  l          log                     t         stdout.log / stderr.log
  p          first Traceback / NaN / out-of-memory line
  K          stop this run           escape    back
  [ ]        previous / next tab (Charts, Summary, Config, Artifacts, Log)
[b]Dialogs[/b]
  y / n      confirm / cancel        space enter  pick devices / run
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(KEYS_HELP, id="help-text")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
