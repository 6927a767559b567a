"""Event protocol v1: the only language the engine speaks to the world (docs/internals.md).

Standard library only: the manager (CLI, TUI, scheduler, supervisor) imports this module to read
``events.jsonl`` and must not pay for torch. It holds the three halves of the protocol:

* ``make_event`` / ``encode``: one JSON object per line, NaN/inf written as ``null``;
* ``parse_line`` / ``EventTail``: a tolerant reader that never raises -- a non-JSON line is text,
  an unknown type is kept but ignored by the reducer, a torn last line waits for its newline;
* ``RunState`` / ``apply_event``: the pure reducer every view of a run is built from.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

PROTOCOL_VERSION = 1

EVENT_TYPES = ("run_started", "step", "epoch", "artifact", "checkpoint", "log", "run_finished")
FINAL_STATUSES = ("completed", "failed", "stopped", "lost")


# --------------------------------------------------------------------------- encoding


def sanitize(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    # numpy / torch scalars and paths: fall back to their Python value or text.
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return sanitize(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return sanitize(tolist())
    return str(value)


def make_event(type_: str, run_id: str, t: float | None = None, **fields: Any) -> dict[str, Any]:
    """Build an event dict with the envelope every line carries."""
    event: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": type_, "run_id": run_id}
    event["t"] = time.time() if t is None else t
    event.update(fields)
    return event


def encode(event: dict[str, Any]) -> str:
    """One line of JSON, without the newline. Never emits NaN/Infinity."""
    return json.dumps(sanitize(event), allow_nan=False, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class TextLine:
    """A line that is not a protocol event (a print, a warning, garbage)."""

    text: str


@dataclass(frozen=True)
class UnknownEvent:
    """A JSON object with a type (or version) this reader does not know; kept, then ignored."""

    raw: dict[str, Any]


Parsed = dict[str, Any] | TextLine | UnknownEvent  # one line of an events file, as read


def parse_line(line: str | bytes) -> Parsed | None:
    """Parse one line. Never raises. Returns None for a blank line."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return TextLine(text)
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return TextLine(text)
    if obj.get("v") != PROTOCOL_VERSION or obj["type"] not in EVENT_TYPES:
        return UnknownEvent(obj)
    return obj


class EventTail:
    """Incremental reader of an append-only events file.

    Reads only the bytes appended since the last call and keeps an incomplete last line in a
    buffer until its newline arrives, so a line torn by a crash is never misread.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self._partial = b""

    def read_new(self, max_bytes: int | None = 8 << 20) -> list[Parsed]:
        """Return the complete lines appended since the last call (at most ``max_bytes``; None: all)."""
        out: list[Parsed] = []
        for raw in self.read_lines(max_bytes):
            parsed = parse_line(raw)
            if parsed is not None:
                out.append(parsed)
        return out

    def read_lines(self, max_bytes: int | None = 8 << 20) -> list[bytes]:
        """The complete lines appended since the last call, as written, without their newlines."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                # never ask for more than is there: read(n) allocates n bytes up front
                available = max(0, os.fstat(fh.fileno()).st_size - self.offset)
                chunk = fh.read(available if max_bytes is None else min(max_bytes, available))
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended on a newline
        return lines

    @property
    def pending(self) -> bytes:
        """A last line read so far without its newline (torn, or still being written)."""
        return self._partial


def read_events(path: str | os.PathLike[str]) -> list[Parsed]:
    """Every complete line of an events file (a torn last line is left out)."""
    return EventTail(path).read_new(max_bytes=None)


# --------------------------------------------------------------------------- reducer

MAX_STEP_POINTS = 512  # step-loss history kept for charts; halved by decimation when full
MAX_LOG_LINES = 200


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float | None = None
    train_acc1: float | None = None
    eval_loss: float | None = None
    eval_acc1: float | None = None
    eval_acc5: float | None = None
    lr: float | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    t: float | None = None  # wall-clock time the epoch ended (its event's t)


@dataclass(frozen=True)
class RunState:
    """Everything a view needs to know about one run, built only by ``apply_event``."""

    run_id: str = ""
    status: str = "starting"  # starting | running | completed | failed | stopped | lost
    config: dict[str, Any] = field(default_factory=dict)
    total_epochs: int | None = None
    steps_per_epoch: int | None = None
    device: str | None = None
    started_t: float | None = None
    last_t: float | None = None
    finished_t: float | None = None
    epoch: int | None = None  # 0-based epoch of the latest step/epoch event
    step: int | None = None
    loss: float | None = None  # latest step loss
    lr: float | None = None
    step_losses: tuple[tuple[float, float], ...] = ()  # (fractional epoch, loss)
    step_stride: int = 1  # keep every n-th step point (doubles when the history fills)
    step_seen: int = 0
    extra_losses: dict[str, float | None] = field(default_factory=dict)
    epochs: tuple[EpochRecord, ...] = ()
    best_acc1: float | None = None
    best_epoch: int | None = None
    last_eval: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[dict[str, Any], ...] = ()
    checkpoints: tuple[dict[str, Any], ...] = ()
    logs: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    events_seen: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def epochs_done(self) -> int:
        return len(self.epochs)

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Remaining seconds estimated from the mean epoch time so far."""
        if self.finished or not self.total_epochs or not self.epochs:
            return None
        secs = [e.seconds for e in self.epochs if e.seconds]
        if not secs:
            return None
        mean, left = sum(secs) / len(secs), self.total_epochs - len(self.epochs)
        ended = self.epochs[-1].t
        if now is None or ended is None or left <= 0:
            return left * mean
        # Tick down between epochs; an epoch slower than the mean stops at the epochs after it.
        into_epoch = max(0.0, now - ended)
        return max(0.0, mean - into_epoch) + (left - 1) * mean


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _with_log(state: RunState, line: str) -> tuple[str, ...]:
    logs = (*state.logs, line)
    return logs[-MAX_LOG_LINES:]


def apply_event(state: RunState, event: Parsed | None) -> RunState:
    """Return the state after ``event``. Pure: the input state is never modified."""
    if event is None or isinstance(event, UnknownEvent):
        return state
    if isinstance(event, TextLine):
        return replace(state, logs=_with_log(state, event.text))
    handler = _HANDLERS.get(event.get("type"))  # type: ignore[arg-type]
    if handler is None:
        return state
    t = _num(event.get("t"))
    # what every protocol event changes, whatever its type
    base: dict[str, Any] = {
        "events_seen": state.events_seen + 1,
        "last_t": t if t is not None else state.last_t,
    }
    if not state.run_id and isinstance(event.get("run_id"), str):
        base["run_id"] = event["run_id"]
    return handler(state, event, base)


def _int_or(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) else default


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _running(state: RunState) -> str:
    return "running" if state.status == "starting" else state.status


def _on_run_started(state: RunState, event: dict[str, Any], base: dict[str, Any]) -> RunState:
    return replace(
        state,
        **base,
        # a resumed session starts afresh: the previous session's ending no longer describes the run
        status="running",
        error=None,
        summary={},
        finished_t=None,
        config=_dict(event.get("config")),
        total_epochs=_int_or(event.get("total_epochs"), None),
        steps_per_epoch=_int_or(event.get("steps_per_epoch"), None),
        device=str(event.get("device")) if event.get("device") is not None else None,
        started_t=_num(event.get("t")),
    )


def _on_step(state: RunState, event: dict[str, Any], base: dict[str, Any]) -> RunState:
    epoch = _int_or(event.get("epoch"), state.epoch)
    step = _int_or(event.get("step"), state.step)
    loss = _num(event.get("loss"))
    extra = {k: _num(v) for k, v in event.items() if k.startswith("loss_")}
    points, stride = _step_points(state, epoch, step, loss)
    return replace(
        state,
        **base,
        status=_running(state),
        epoch=epoch,
        step=step,
        loss=loss,
        lr=_num(event.get("lr")) if event.get("lr") is not None else state.lr,
        step_losses=points,
        step_stride=stride,
        step_seen=state.step_seen + 1,
        extra_losses=extra or state.extra_losses,
    )


def _step_points(
    state: RunState, epoch: int | None, step: int | None, loss: float | None
) -> tuple[tuple[tuple[float, float], ...], int]:
    """The step-loss history after one more step, and its stride.

    Keeps steps 1, 1+s, 1+2s, ...: when the history fills, every other point goes and the stride
    doubles, so the spacing stays even however long the run."""
    points, stride = state.step_losses, state.step_stride
    if loss is None or state.step_seen % stride != 0:
        return points, stride
    x = float(epoch or 0)
    if state.steps_per_epoch and step is not None:
        x += step / state.steps_per_epoch
    points = (*points, (x, loss))
    if len(points) > MAX_STEP_POINTS:
        return points[::2], stride * 2
    return points, stride


def _on_epoch(state: RunState, event: dict[str, Any], base: dict[str, Any]) -> RunState:
    train, ev = _dict(event.get("train")), _dict(event.get("eval"))
    ep = _int_or(event.get("epoch"), len(state.epochs))
    record = EpochRecord(
        epoch=ep,
        train_loss=_num(train.get("loss")),
        train_acc1=_num(train.get("acc1")),
        eval_loss=_num(ev.get("loss")),
        eval_acc1=_num(ev.get("acc1")),
        eval_acc5=_num(ev.get("acc5")),
        lr=_num(event.get("lr")),
        seconds=_num(event.get("seconds")),
        extra={k: v for k, v in train.items() if k.startswith("loss_")},
        t=_num(event.get("t")),
    )
    # the engine's own best wins; without it, the best eval accuracy seen so far
    best = _num(event.get("best_acc1"))
    best_epoch = _int_or(event.get("best_epoch"), None)
    if (
        best is None
        and record.eval_acc1 is not None
        and (state.best_acc1 is None or record.eval_acc1 > state.best_acc1)
    ):
        best, best_epoch = record.eval_acc1, ep
    return replace(
        state,
        **base,
        status=_running(state),
        epoch=ep,
        epochs=(*(e for e in state.epochs if e.epoch != ep), record),  # a re-run epoch replaces its record
        best_acc1=best if best is not None else state.best_acc1,
        best_epoch=best_epoch if best is not None else state.best_epoch,
        last_eval=ev or state.last_eval,
    )


def _on_artifact(state: RunState, event: dict[str, Any], base: dict[str, Any]) -> RunState:
    item = {k: event.get(k) for k in ("kind", "path", "summary") if k in event}
    return replace(state, **base, artifacts=(*state.artifacts, item))


def _on_checkpoint(state: RunState, event: dict[str, Any], base: dict[str, Any]) -> RunState:
    item = {k: event.get(k) for k in ("epoch", "path", "is_best") if k in event}
    return replace(state, **base, checkpoints=(*state.checkpoints, item))


def _on_log(state: RunState, event: dict[str, Any], base: dict[str, Any]) -> RunState:
    level = str(event.get("level", "info"))
    return replace(state, **base, logs=_with_log(state, f"[{level}] {event.get('msg', '')}"))


def _on_run_finished(state: RunState, event: dict[str, Any], base: dict[str, Any]) -> RunState:
    status = event.get("status")
    summary = _dict(event.get("summary"))
    best = _num(summary.get("best_acc1"))
    return replace(
        state,
        **base,
        status=status if status in FINAL_STATUSES else "failed",
        finished_t=_num(event.get("t")),
        summary=summary,
        error=str(event["error"]) if event.get("error") else state.error,
        best_acc1=best if best is not None else state.best_acc1,
        best_epoch=_int_or(summary.get("best_epoch"), state.best_epoch),
    )


_HANDLERS: dict[str, Callable[[RunState, dict[str, Any], dict[str, Any]], RunState]] = {
    "run_started": _on_run_started,
    "step": _on_step,
    "epoch": _on_epoch,
    "artifact": _on_artifact,
    "checkpoint": _on_checkpoint,
    "log": _on_log,
    "run_finished": _on_run_finished,
}


def reduce_events(events: list[Any], state: RunState | None = None) -> RunState:
    """Fold ``apply_event`` over a list of parsed lines."""
    state = state or RunState()
    for event in events:
        state = apply_event(state, event)
    return state
