"""Every key, in one place (tests check that each bound key is listed here).

Every line fits 74 cells: the help box is 80 columns wide on an 80-column terminal, less its border,
padding and scrollbar. A test holds that, so no description wraps onto the next line.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

from mdtui.tui.widgets.vi_scroll import ViScroll

HELP_WIDTH = 74

KEYS_HELP = """\
[b]Main screen[/b]                  (q, escape or ? closes this help)
  j k ↑ ↓     move                 1 2        Experiments / Runs tab
  g G         first / last row (Home / End too)
  enter       open the run (an experiment opens its latest run)
  space       select, then down    escape     clear filter or selection
  tab shift+tab  the other tab (Experiments / Runs)
  /           filter (enter keeps)
  s S         sort by the next column / reverse the order
  r           run the selection now (free devices; queued when all busy)
  d           choose devices (free memory, load, owners), then run
  a           add the selection to the queue
  [ ]         move a queued run up / down
  x           cancel a queued run
  P           pause / resume the queue (running runs carry on)
  K           stop selected runs: SIGTERM, SIGKILL after the grace period
  u           resume a stopped / failed / lost run from its last.pt
  l           log of the run       c          compare selected runs
  R           results: RESULTS.md and the report, rendered
  e           edit experiments.toml in $EDITOR (edits made elsewhere are
              read by themselves; ctrl+p "Reload" reads it now)
  ctrl+p      command palette      ?          this help
  q           quit: runs and the queue keep going
[b]Run detail[/b]
  [ ]         previous / next tab: Charts Summary Config Artifacts Log
  l           log                  t          show stdout.log / stderr.log
  p           first Traceback / NaN / out-of-memory line in the log
  K           stop this run        u          resume it from last.pt
  q escape    back
[b]Compare[/b]
  a           all config keys / only those that differ
  q escape    back
[b]Results[/b]
  [ ]         RESULTS.md / report  r          read them again
  q escape    back
[b]Scrolling (Config, Log, Compare, Results, this help)[/b]
  j k ↑ ↓     line down / up       PgUp PgDn  page up / down
  g Home      top                  G End      bottom (the log follows)
[b]Dialogs[/b]
  y / n       confirm / cancel     space enter  pick devices / run
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]
    CSS = """
    HelpScreen { align: center middle; }
    HelpScreen #dialog {
        width: 100%;
        max-width: 82;
        height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    HelpScreen #dialog:focus { border: thick $accent; }
    """

    def compose(self) -> ComposeResult:
        with ViScroll(id="dialog"):
            yield Static(KEYS_HELP.rstrip("\n"), id="help-text")

    def on_mount(self) -> None:
        self.query_one("#dialog").focus()

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
