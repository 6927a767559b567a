"""What screens ask of the app. Screens post these; ``MdtuiApp`` handles them (screens never import it).

Every message names what is asked for, not how: the app decides whether to confirm first, which
worker runs it and what the user is told.
"""

from __future__ import annotations

from textual.message import Message


class RunRequested(Message):
    """Run experiments now (``devices`` None: chosen automatically; queued when nothing fits)."""

    def __init__(self, names: list[str], devices: list[str] | None = None) -> None:
        super().__init__()
        self.names = list(names)
        self.devices = list(devices) if devices else None


class DevicePickRequested(Message):
    """Let the user choose devices for these experiments, then run them there."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = list(names)


class QueueRequested(Message):
    """Add experiments to the queue."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = list(names)


class StopRequested(Message):
    """Stop live runs or cancel queued ones, after a confirmation that lists them."""

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)


# what `mdtui run --resume` may take up (the launcher refuses the rest, and says why)
RESUMABLE = frozenset({"stopped", "failed", "lost"})


class ResumeRequested(Message):
    """Resume stopped / failed / lost runs from their last.pt (the CLI's `mdtui run --resume`)."""

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = run_ids


class CancelRequested(Message):
    """Take queued runs out of the queue (no confirmation: nothing has started)."""

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)


class MoveRequested(Message):
    """Move a queued run ``delta`` places (negative: towards the front)."""

    def __init__(self, run_id: str, delta: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.delta = delta


class OpenRunRequested(Message):
    """Show a run's detail screen on ``tab`` (None: the screen chooses by the run's status)."""

    def __init__(self, run_id: str, tab: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.tab = tab


class CompareRequested(Message):
    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)


class EditRequested(Message):
    """Open experiments.toml in the user's editor, then reload it."""


class QueuePauseToggled(Message):
    """Pause the queue if it runs, resume it if paused."""
