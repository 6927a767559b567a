"""One training epoch and one evaluation pass: the hot path.

Nothing here loops over samples in Python, and nothing syncs the device per step except the
non-finite check (a skipped or failed step must be decided before ``optimizer.step``) and the
throttled step events. Running sums stay on the device until the epoch ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from engine.data.loader import Batch
from engine.device import Runtime
from engine.metrics import EvalAccumulator
from engine.plugins import TrainPlugin
from engine.sinks import EventSink

MAX_SKIP_LOGS = 5  # per epoch; the epoch event carries the full count


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, value: float) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"non-finite loss ({value}) at epoch {epoch}, step {step} (both 0-based); "
            'the step was not applied. Lower optim.lr, use precision = "fp32", or set nonfinite = "skip" '
            "to skip such batches"
        )


@dataclass
class TrainMeters:
    """Running sums of one training epoch, on the device; saved in last.pt for an exact resume."""

    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    count: int = 0
    skipped: int = 0
    terms: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)

    def add_term(self, key: str, value: torch.Tensor) -> None:
        if key not in self.terms:
            self.terms[key] = torch.zeros((), dtype=torch.float64, device=self.device)
        self.terms[key] += value

    def result(self) -> dict[str, Any]:
        n = max(self.count, 1)
        out: dict[str, Any] = {
            "loss": self.loss_sum.item() / n,
            "acc1": 100.0 * self.correct.item() / n,
        }
        out.update({f"loss_{k}": v.item() / n for k, v in self.terms.items()})
        if self.skipped:
            out["skipped"] = self.skipped
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "count": self.count,
            "skipped": self.skipped,
            "terms": {k: v.cpu() for k, v in self.terms.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.device)
        self.correct = state["correct"].to(self.device)
        self.count = int(state["count"])
        self.skipped = int(state["skipped"])
        self.terms = {k: v.to(self.device) for k, v in state["terms"].items()}


@dataclass
class EpochOutcome:
    meters: TrainMeters
    stopped: bool  # a stop was requested: the epoch ends early at ``next_step``
    next_step: int


def _sub_batches(plugins: Sequence[TrainPlugin], batch: Batch) -> list[Batch]:
    for plugin in plugins:
        subs = plugin.sub_batches(batch)
        if subs is not None:
            return subs
    return [batch]


@dataclass
class StepContext:
    """What every training step of one epoch shares: the objects it updates and how it reports."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    meters: TrainMeters
    plugins: Sequence[TrainPlugin]
    scaler: torch.amp.GradScaler | None
    sink: EventSink | None
    epoch: int
    lr: float
    nonfinite: str  # "fail" | "skip"


@dataclass
class StepLoss:
    """One forward pass: the logits (fp32), the classification loss and the plugins' extra terms."""

    logits: torch.Tensor
    cls: torch.Tensor
    terms: dict[str, torch.Tensor]
    total: torch.Tensor


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    *,
    epoch: int,
    lr: float,
    start_step: int = 0,
    meters: TrainMeters | None = None,
    plugins: Sequence[TrainPlugin] = (),
    scaler: torch.amp.GradScaler | None = None,
    sink: EventSink | None = None,
    nonfinite: str = "fail",
    should_stop: Callable[[], bool] = lambda: False,
) -> EpochOutcome:
    """Train over ``batches`` (already positioned at ``start_step``); stop early when asked."""
    model.train()
    criterion.train()
    ctx = StepContext(
        model=model,
        criterion=criterion,
        optimizer=optimizer,
        runtime=runtime,
        meters=meters or TrainMeters(runtime.device),
        plugins=plugins,
        scaler=scaler,
        sink=sink,
        epoch=epoch,
        lr=lr,
        nonfinite=nonfinite,
    )
    step = start_step
    for step, batch in enumerate(batches, start=start_step):
        for sub in _sub_batches(plugins, batch):
            _train_step(ctx, sub, step)
        if should_stop():
            return EpochOutcome(ctx.meters, stopped=True, next_step=step + 1)
    return EpochOutcome(ctx.meters, stopped=False, next_step=step + 1)


def _train_step(ctx: StepContext, batch: Batch, step: int) -> None:
    ctx.optimizer.zero_grad(set_to_none=True)
    loss = _forward(ctx, batch)
    value = loss.total.detach()
    if not bool(torch.isfinite(value)):
        _skip_non_finite(ctx, float(value), step)
        return
    _backward_and_update(ctx, loss.total, batch)
    _record(ctx, batch, step, loss, value)


def _forward(ctx: StepContext, batch: Batch) -> StepLoss:
    with ctx.runtime.autocast():
        logits = ctx.model(batch.images)
    # Losses run in fp32 on fp32 logits: focal-style modulators and EFL's statistics are not
    # meant for bf16 (longtail-and-speed-anchors.md section 5.7).
    logits = logits.float()
    loss_cls = ctx.criterion(logits, batch.labels)
    terms: dict[str, torch.Tensor] = {}
    for plugin in ctx.plugins:
        terms.update(plugin.loss_terms(logits, batch))
    total = loss_cls + sum(terms.values()) if terms else loss_cls
    return StepLoss(logits, loss_cls, terms, total)


def _skip_non_finite(ctx: StepContext, value: float, step: int) -> None:
    """A non-finite loss: fail the run, or (nonfinite = "skip") drop the batch before any update."""
    if ctx.nonfinite != "skip":
        raise NonFiniteLoss(ctx.epoch, step, value)
    ctx.meters.skipped += 1
    if ctx.sink is not None and ctx.meters.skipped <= MAX_SKIP_LOGS:
        ctx.sink.log(
            f"skipped batch with non-finite loss ({value}) at epoch {ctx.epoch}, step {step}", "warning"
        )
    ctx.optimizer.zero_grad(set_to_none=True)


def _backward_and_update(ctx: StepContext, loss: torch.Tensor, batch: Batch) -> None:
    scaler, optimizer = ctx.scaler, ctx.optimizer
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # plugins see true gradients in before_step
    else:
        loss.backward()
    for plugin in ctx.plugins:
        plugin.before_step(ctx.model, optimizer, batch)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    for plugin in ctx.plugins:
        plugin.after_step(ctx.model, optimizer, batch)


def _record(ctx: StepContext, batch: Batch, step: int, loss: StepLoss, value: torch.Tensor) -> None:
    """Add the step to the epoch's running sums; emit a (throttled) step event."""
    meters, terms = ctx.meters, loss.terms
    n = len(batch)
    meters.count += n
    meters.loss_sum += value.double() * n
    meters.correct += (loss.logits.detach().argmax(dim=1) == batch.labels).sum()
    if terms:
        meters.add_term("cls", loss.cls.detach().double() * n)
        for key, term in terms.items():
            meters.add_term(key, term.detach().double() * n)
    if ctx.sink is not None and ctx.sink.want_step():
        fields: dict[str, Any] = {"epoch": ctx.epoch, "step": step, "loss": float(value), "lr": ctx.lr}
        if terms:
            fields["loss_cls"] = float(loss.cls.detach())
            fields.update({f"loss_{k}": float(v.detach()) for k, v in terms.items()})
        ctx.sink.emit("step", **fields)


def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    criterion: nn.Module,
    runtime: Runtime,
    num_classes: int,
    train_counts: list[int] | None = None,
) -> dict[str, Any]:
    """Loss, top-1/top-5, per-class and many/medium/few accuracy (percent) over ``batches``."""
    model.eval()
    criterion.eval()
    acc = EvalAccumulator(num_classes, runtime.device)
    with torch.inference_mode():
        for batch in batches:
            with runtime.autocast():
                logits = model(batch.images)
            logits = logits.float()
            loss = criterion(logits, batch.labels)
            acc.update(logits, batch.labels, loss * len(batch))
    return acc.result(train_counts)
