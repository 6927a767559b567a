"""One training epoch and one evaluation pass: the hot path.

Nothing here loops over samples in Python, and nothing syncs the device per step except the
non-finite check (a skipped or failed step must be decided before ``optimizer.step``) and the
throttled step events. Running sums stay on the device until the epoch ends.

Under data parallelism (engine/distributed.py) each rank trains on its shard of the global batch and
one small all-reduce per step shares the shard's loss sum, correct count, non-finite flag and stop
flag: every rank then skips, fails or stops at the same step, and the meters hold global sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from engine import distributed
from engine.data.loader import Batch
from engine.device import Runtime
from engine.metrics import EvalAccumulator
from engine.mixing import mixed_loss
from engine.plugins import TrainPlugin
from engine.sinks import EventSink

MAX_SKIP_LOGS = 5  # per epoch; the epoch event carries the full count
# Loss terms that are sums over the batch rather than means: under data parallelism a rank's shard
# sum is scaled by the world size (DDP averages), a mean by n_rank * W / N (distributed.loss_scale).
SUM_TERMS = frozenset({"spatial"})


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
    # Steps skipped on the device (the fused optimiser's found_inf): [steps, samples] and the first
    # such step, read once per epoch by ``settle`` instead of once per step.
    pending: torch.Tensor | None = None
    first_bad: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)

    def add_term(self, key: str, value: torch.Tensor) -> None:
        if key not in self.terms:
            self.terms[key] = torch.zeros((), dtype=torch.float64, device=self.device)
        self.terms[key] += value

    def note_device_skip(self, bad: torch.Tensor, samples: int, step: int) -> None:
        if self.pending is None:
            self.pending = torch.zeros(2, dtype=torch.long, device=self.device)
            self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        flag = bad.long()
        self.pending[0] += flag
        self.pending[1] += flag * samples
        assert self.first_bad is not None
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def settle(self) -> tuple[int, int]:
        """Fold the device-side skips into the counts (one sync); returns (steps skipped, first one)."""
        if self.pending is None or self.first_bad is None:
            return 0, -1
        steps, samples = (int(v) for v in self.pending.tolist())
        first = int(self.first_bad)
        self.pending = self.first_bad = None
        self.skipped += steps
        self.count -= samples
        return steps, first

    def result(self) -> dict[str, Any]:
        self.settle()
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
        self.settle()
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


def _never() -> bool:
    return False


@dataclass(frozen=True)
class TrainParts:
    """What every epoch of a run trains with: the objects a step updates and how it reports."""

    model: nn.Module  # the forward callable (DDP-wrapped or compiled as the run asks)
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    plugins: Sequence[TrainPlugin] = ()
    scaler: torch.amp.GradScaler | None = None
    sink: EventSink | None = None
    nonfinite: str = "fail"  # "fail" | "skip"
    should_stop: Callable[[], bool] = _never
    # Data parallelism without DDP (Model Doctor's double backward): average gradients after backward
    grad_sync: Callable[[], None] | None = None


@dataclass
class StepContext:
    """What every training step of one epoch shares: the run's parts, the epoch and its sums."""

    parts: TrainParts
    meters: TrainMeters
    epoch: int
    lr: float
    # A fused optimiser skips a step whose found_inf is set, on the device: the non-finite check then
    # needs no host sync per step (see device_guard)
    on_device_guard: bool = False


@dataclass
class StepLoss:
    """One forward pass: the logits (fp32), the classification loss and the plugins' extra terms."""

    logits: torch.Tensor
    cls: torch.Tensor
    terms: dict[str, torch.Tensor]
    total: torch.Tensor  # this rank's loss, as reported (the shard's mean)
    backward: torch.Tensor  # what is back-propagated: ``total`` scaled for data parallelism


def train_one_epoch(
    parts: TrainParts,
    batches: Iterable[Batch],
    *,
    epoch: int,
    lr: float,
    start_step: int = 0,
    meters: TrainMeters | None = None,
) -> EpochOutcome:
    """Train over ``batches`` (already positioned at ``start_step``); stop early when asked."""
    parts.model.train()
    parts.criterion.train()
    ctx = StepContext(
        parts=parts,
        meters=meters or TrainMeters(parts.runtime.device),
        epoch=epoch,
        lr=lr,
        on_device_guard=device_guard(parts.optimizer, parts.scaler),
    )
    step = start_step
    for step, batch in enumerate(batches, start=start_step):
        stop = False
        for sub in _sub_batches(parts.plugins, batch):
            stop = _train_step(ctx, sub, step)
        if stop:
            _settle_device_skips(ctx)
            return EpochOutcome(ctx.meters, stopped=True, next_step=step + 1)
    _settle_device_skips(ctx)
    return EpochOutcome(ctx.meters, stopped=False, next_step=step + 1)


def device_guard(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> bool:
    """Whether non-finite steps are skipped on the device rather than checked on the host per step.

    Fused optimisers (engine/optim.py builds them on CUDA) take a ``found_inf`` tensor and leave
    parameters and their state untouched when it is 1, with no host sync. Under fp16 the GradScaler
    already sets it; under data parallelism the step's all-reduce is read on the host anyway."""
    if scaler is not None or distributed.world().enabled:
        return False
    groups = optimizer.param_groups
    return bool(groups) and all(group.get("fused") for group in groups)


def _settle_device_skips(ctx: StepContext) -> None:
    """Once per epoch (or at a stop): report the steps the device skipped; ``fail`` fails here."""
    steps, first = ctx.meters.settle()
    if not steps:
        return
    if ctx.parts.nonfinite != "skip":
        raise NonFiniteLoss(ctx.epoch, first, float("nan"))
    if ctx.parts.sink is not None:
        ctx.parts.sink.log(
            f"skipped {steps} batch(es) with a non-finite loss in epoch {ctx.epoch} (first at step {first})",
            "warning",
        )


def _train_step(ctx: StepContext, batch: Batch, step: int) -> bool:
    """One optimiser step; returns whether the run stops after it (agreed by all ranks)."""
    ctx.parts.optimizer.zero_grad(set_to_none=True)
    loss = _forward(ctx, batch)
    value = loss.total.detach()
    if distributed.world().enabled:
        return _train_step_shared(ctx, batch, step, loss)
    if ctx.on_device_guard:
        _train_step_guarded(ctx, batch, step, loss)
        return ctx.parts.should_stop()
    if not bool(torch.isfinite(value)):
        _skip_non_finite(ctx, float(value), step)
        return ctx.parts.should_stop()
    _backward_and_update(ctx, loss.backward, batch)
    _record(ctx, batch, step, loss, value)
    return ctx.parts.should_stop()


def _train_step_guarded(ctx: StepContext, batch: Batch, step: int, loss: StepLoss) -> None:
    """A step whose non-finite check stays on the device: the fused optimiser skips the update when
    the loss is not finite, and the sums leave the batch out; ``_settle_device_skips`` reports it."""
    value = loss.total.detach()
    bad = ~torch.isfinite(value)
    ctx.parts.optimizer.found_inf = bad.float()  # type: ignore[attr-defined]
    try:
        _backward_and_update(ctx, loss.backward, batch)
    finally:
        ctx.parts.optimizer.found_inf = None  # type: ignore[attr-defined]
    ctx.meters.note_device_skip(bad, len(batch), step)
    zero = torch.zeros((), dtype=torch.float64, device=value.device)
    kept = StepLoss(
        loss.logits,
        torch.where(bad, zero, loss.cls.detach().double()),
        {k: torch.where(bad, zero, v.detach().double()) for k, v in loss.terms.items()},
        torch.where(bad, zero, value.double()),
        loss.backward,
    )
    _record(ctx, batch, step, kept, kept.total, hits_mask=~bad)


def _train_step_shared(ctx: StepContext, batch: Batch, step: int, loss: StepLoss) -> bool:
    """The data-parallel step: one all-reduce of [loss sum, correct, non-finite, stop, terms...]."""
    n = len(batch)
    value = loss.total.detach()
    parts = [
        value.double() * n,
        (loss.logits.detach().argmax(dim=1) == batch.labels).sum().double(),
        (~torch.isfinite(value)).double(),
        torch.tensor(1.0 if ctx.parts.should_stop() else 0.0, dtype=torch.float64, device=value.device),
    ]
    if loss.terms:
        parts.append(loss.cls.detach().double() * n)
        parts += [term.detach().double() * n for term in loss.terms.values()]
    shared = distributed.all_reduce_sum(torch.stack(parts)).tolist()
    total = batch.total
    stop = shared[3] > 0
    if shared[2] > 0:
        _skip_non_finite(ctx, shared[0] / max(total, 1), step)
        return stop
    _backward_and_update(ctx, loss.backward, batch)
    meters = ctx.meters
    meters.count += total
    meters.loss_sum += shared[0]
    meters.correct += int(round(shared[1]))
    global_terms = dict(zip(["cls", *loss.terms], shared[4:], strict=True)) if loss.terms else {}
    for key, term_sum in global_terms.items():
        meters.add_term(key, torch.tensor(term_sum, dtype=torch.float64, device=meters.device))
    if ctx.parts.sink is not None and ctx.parts.sink.want_step():
        fields: dict[str, Any] = {"epoch": ctx.epoch, "step": step, "loss": shared[0] / total, "lr": ctx.lr}
        fields.update({f"loss_{k}": v / total for k, v in global_terms.items()})
        ctx.parts.sink.emit("step", **fields)
    return stop


def _forward(ctx: StepContext, batch: Batch) -> StepLoss:
    with ctx.parts.runtime.autocast():
        logits = ctx.parts.model(batch.images)
    # Losses run in fp32 on fp32 logits: focal-style modulators and EFL's statistics are not
    # meant for bf16 (reference-spec.md §10.7).
    logits = logits.float()
    if len(batch) == 0:
        return _empty_shard_loss(ctx, logits, batch)
    loss_cls = mixed_loss(ctx.parts.criterion, logits, batch)  # = criterion(logits, labels) unless mixed
    terms: dict[str, torch.Tensor] = {}
    for plugin in ctx.parts.plugins:
        terms.update(plugin.loss_terms(logits, batch))
    total = loss_cls + sum(terms.values()) if terms else loss_cls
    backward = total
    if distributed.world().enabled:
        mean_scale = distributed.loss_scale(len(batch), batch.total)
        backward = loss_cls * mean_scale
        for key, term in terms.items():
            backward = backward + term * (distributed.world().size if key in SUM_TERMS else mean_scale)
    return StepLoss(logits, loss_cls, terms, total, backward)


def _empty_shard_loss(ctx: StepContext, logits: torch.Tensor, batch: Batch) -> StepLoss:
    """A rank whose slice of a global batch is empty (the batch is smaller than the world).

    It must make the collectives the other ranks make, in the same order: synchronised BatchNorm's
    all-reduces in every backward (the channel loss's double backward included), DDP's gradient
    all-reduce, a loss's batch sums. So it runs the same computation on empty tensors: the loss is
    zero with a graph through every parameter, and the plugins' terms (finite on an empty batch) are
    back-propagated with weight zero. Its gradients are zero; its reported values are zero.
    """
    zero = logits.sum() * 0.0
    mixed_loss(ctx.parts.criterion, logits, batch)  # value unused (NaN, a mean of nothing); its collectives
    terms: dict[str, torch.Tensor] = {}
    for plugin in ctx.parts.plugins:
        terms.update(plugin.loss_terms(logits, batch))
    backward = zero + sum(term * 0.0 for term in terms.values()) if terms else zero
    reported = zero.detach()
    return StepLoss(logits, reported, {key: reported for key in terms}, reported, backward)


def _skip_non_finite(ctx: StepContext, value: float, step: int) -> None:
    """A non-finite loss: fail the run, or (nonfinite = "skip") drop the batch before any update."""
    if ctx.parts.nonfinite != "skip":
        raise NonFiniteLoss(ctx.epoch, step, value)
    ctx.meters.skipped += 1
    if ctx.parts.sink is not None and ctx.meters.skipped <= MAX_SKIP_LOGS:
        ctx.parts.sink.log(
            f"skipped batch with non-finite loss ({value}) at epoch {ctx.epoch}, step {step}", "warning"
        )
    ctx.parts.optimizer.zero_grad(set_to_none=True)


def _backward_and_update(ctx: StepContext, loss: torch.Tensor, batch: Batch) -> None:
    scaler, optimizer = ctx.parts.scaler, ctx.parts.optimizer
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # plugins see true gradients in before_step
    else:
        loss.backward()
    if ctx.parts.grad_sync is not None:
        ctx.parts.grad_sync()
    for plugin in ctx.parts.plugins:
        plugin.before_step(ctx.parts.model, optimizer, batch)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    for plugin in ctx.parts.plugins:
        plugin.after_step(ctx.parts.model, optimizer, batch)


def _record(
    ctx: StepContext,
    batch: Batch,
    step: int,
    loss: StepLoss,
    value: torch.Tensor,
    hits_mask: torch.Tensor | None = None,
) -> None:
    """Add the step to the epoch's running sums; emit a (throttled) step event."""
    meters, terms = ctx.meters, loss.terms
    n = len(batch)
    meters.count += n
    meters.loss_sum += value.double() * n
    hits = (loss.logits.detach().argmax(dim=1) == batch.labels).sum()
    meters.correct += hits if hits_mask is None else hits * hits_mask
    if terms:
        meters.add_term("cls", loss.cls.detach().double() * n)
        for key, term in terms.items():
            meters.add_term(key, term.detach().double() * n)
    if ctx.parts.sink is not None and ctx.parts.sink.want_step():
        fields: dict[str, Any] = {"epoch": ctx.epoch, "step": step, "loss": float(value), "lr": ctx.lr}
        if terms:
            fields["loss_cls"] = float(loss.cls.detach())
            fields.update({f"loss_{k}": float(v.detach()) for k, v in terms.items()})
        ctx.parts.sink.emit("step", **fields)


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
            if len(batch) == 0:  # an empty shard of a last batch smaller than the world
                continue
            with runtime.autocast():
                logits = model(batch.images)
            logits = logits.float()
            loss = criterion(logits, batch.labels)
            acc.update(logits, batch.labels, loss * len(batch))
    return acc.result(train_counts)
