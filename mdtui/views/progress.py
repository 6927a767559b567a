"""Where a run is inside its epoch, and how long is left, from its step events (headless).

A first CIFAR or ImageNet epoch takes minutes to hours: until it ends there is no epoch record, so
the run detail and the Runs table would show nothing at all. The engine's step events (epoch, step,
loss, time) are enough to say ``epoch 1/4 · step 15/97 · loss 1.3600`` and to estimate the time
left from the pace of the steps so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.schema.events import RunState


@dataclass(frozen=True)
class StepProgress:
    epoch: int  # 1-based, as shown
    total_epochs: int | None
    step: int  # steps done in this epoch (the engine's 0-based step + 1)
    steps_per_epoch: int | None
    loss: float | None  # the latest mini-batch's loss
    epoch_left: float | None  # seconds until this epoch ends, from the pace of its steps
    run_left: float | None  # seconds until the run ends

    def text(self) -> str:
        """``epoch 1/4 · step 15/97 · loss 1.3600``: the in-epoch line (times are added by the view)."""
        parts = [f"epoch {self.epoch}" + (f"/{self.total_epochs}" if self.total_epochs else "")]
        parts.append(f"step {self.step}" + (f"/{self.steps_per_epoch}" if self.steps_per_epoch else ""))
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}" if abs(self.loss) < 10 else f"loss {self.loss:.1f}")
        return " · ".join(parts)


def step_progress(state: RunState, now: float | None = None) -> StepProgress | None:
    """The run's place in its current epoch, or None when no step of an unfinished epoch was seen
    (before the first step, between an epoch's end and the next step, or after the run ended)."""
    if state.finished or state.step is None or state.epoch is None:
        return None
    done_epochs = {e.epoch for e in state.epochs}
    if state.epoch in done_epochs:
        return None  # the epoch's record is in: the epoch counter says it all
    steps = state.step + 1
    epoch_left = run_left = None
    begun = _epoch_began(state)
    if state.steps_per_epoch and begun is not None and state.last_t is not None and state.last_t > begun:
        pace = (state.last_t - begun) / steps
        waited = max(0.0, (now or state.last_t) - state.last_t)
        epoch_left = max(0.0, (state.steps_per_epoch - steps) * pace - waited)
        if state.total_epochs:
            later = state.total_epochs - state.epoch - 1
            per_epoch = _mean_epoch_seconds(state) or pace * state.steps_per_epoch
            run_left = epoch_left + max(0, later) * per_epoch
    return StepProgress(
        epoch=state.epoch + 1,
        total_epochs=state.total_epochs,
        step=steps,
        steps_per_epoch=state.steps_per_epoch,
        loss=state.loss,
        epoch_left=epoch_left,
        run_left=run_left,
    )


def run_eta(state: RunState, now: float | None = None) -> float | None:
    """Seconds left: from the steps of the epoch under way when there are any (between epochs, and
    in the first epoch where there is no epoch time yet), else from the mean epoch time."""
    progress = step_progress(state, now)
    if progress is not None and progress.run_left is not None:
        return progress.run_left
    return state.eta_seconds(now)


def _epoch_began(state: RunState) -> float | None:
    """When the current epoch started: the previous epoch's end, else the (latest) session's start."""
    ended = [e.t for e in state.epochs if e.epoch == (state.epoch or 0) - 1 and e.t is not None]
    if ended and (state.started_t is None or ended[-1] >= state.started_t):
        return ended[-1]
    return state.started_t


def _mean_epoch_seconds(state: RunState) -> float | None:
    secs = [e.seconds for e in state.epochs if e.seconds]
    return sum(secs) / len(secs) if secs else None
