"""The process group of a run: data-parallel training over the ranks torchrun starts.

torchrun (``python -m torch.distributed.run --standalone --nproc-per-node N -m engine RUN_DIR``) sets
WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 every rank joins one group (gloo on the CPU, NCCL
on CUDA, device ``cuda:LOCAL_RANK``). A one-process run has no group and every helper here is the
identity, so it pays nothing.

What the ranks share, and why it gives one process's results:
* ``batch_size`` is the global batch. Every rank draws the same seeded epoch order and augmentation
  for the whole epoch and takes a contiguous slice of each global batch (``shard_bounds``).
* A loss returns the mean over its shard; the loop scales it by ``n_rank * W / N`` (``loss_scale``) so
  that the averaged gradient is the gradient of the global-batch mean, last uneven batch included.
* Sums (train loss and accuracy, evaluation confusion counts) are all-reduced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn

from engine.device import DeviceError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # this node's processes (distributed.processes counts per node)

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_world = World()


def detect() -> World:
    """The rank layout torchrun announced in the environment (one process when it did not)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        return World()
    return World(rank, size, local, local_size) if size > 1 else World()


def world() -> World:
    """The group this process belongs to (set by ``init``)."""
    return _world


def use_own_gpu(world: World) -> None:
    """Make ``cuda:LOCAL_RANK`` this rank's device, refusing more ranks than visible GPUs."""
    visible = torch.cuda.device_count()
    if world.local_rank >= visible:  # NCCL would fail later, and less clearly
        raise DeviceError(
            f"{world.size} processes but {visible} GPU(s) visible: a GPU run has one process per GPU; "
            f"give it {world.size} GPUs (gpus = {world.size}), or set distributed.processes to the "
            "number of GPUs"
        )
    torch.cuda.set_device(world.local_rank)


def init(device_type: str) -> World:
    """Join the group torchrun prepared; a no-op for one process."""
    global _world
    detected = detect()
    if not detected.enabled:
        _world = World()
        return _world
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        use_own_gpu(detected)
    if not dist.is_initialized():
        # Rank 0 may diagnose (Model Doctor) for a long while before the next collective: the
        # others wait in it. A rank that dies is noticed by torchrun, not by this timeout.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    _world = detected
    return _world


def destroy(*, in_step: bool = True) -> None:
    """Leave the group. ``in_step``: every rank ended the same way (completed, or stopped at the
    agreed step), so all of them wait here for the last one first: a rank tearing gloo down while
    rank 0 still writes its checkpoints was seen to abort ("terminate called without an active
    exception", under CI load). After a failure torchrun ends the ranks; nobody waits."""
    global _world
    if _world.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            if in_step:
                dist.barrier()
            dist.destroy_process_group()
    _world = World()


# --------------------------------------------------------------------------- sharding


def shard_bounds(lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part of the global batch [lo, hi); the first ranks take one extra
    sample when the batch does not divide, so rank 0 is never empty."""
    n = hi - lo
    base, extra = divmod(n, size)
    start = lo + rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def loss_scale(local: int, total: int) -> float:
    """Factor on a rank's shard-mean loss so the rank-averaged gradient is the global-batch mean's."""
    if not _world.enabled or total == 0:
        return 1.0
    return local * _world.size / total


# --------------------------------------------------------------------------- collectives


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity for one process)."""
    if _world.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


class _SumOverRanks(torch.autograd.Function):
    """y = sum_r x_r on every rank; every y depends on every x_r with weight 1, so dL/dx_r is the sum
    over ranks of dL/dy. The backward is this same function, so it differentiates again (Model
    Doctor's channel loss back-propagates through a gradient that passed synchronised BatchNorm)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return all_reduce_sum(tensor.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _SumOverRanks.apply(grad)


def all_reduce_differentiable(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks that back-propagates (the gradient is summed over ranks too)."""
    if not _world.enabled:
        return tensor
    return _SumOverRanks.apply(tensor)


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not _world.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(value).item() > 0)


def barrier() -> None:
    if _world.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: object, device: torch.device | str = "cpu") -> object:
    """Rank 0's ``obj`` on every rank (tensors travel on the CPU)."""
    if not _world.enabled:
        return obj
    import torch.distributed as dist

    payload = [obj if _world.is_main else None]
    dist.broadcast_object_list(payload, src=0, device=torch.device(device))
    return payload[0]


def _flat_broadcast(tensors: list[torch.Tensor]) -> None:
    if not tensors:
        return
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    dist.broadcast(flat, src=0)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.data.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def broadcast_module(module: nn.Module, *, buffers_only: bool = False) -> None:
    """Rank 0's parameters (and buffers) on every rank, so all ranks start from one model.

    Values travel as float64, exact for every float32/float16 value and every integer below 2^53
    (BatchNorm's batch counter)."""
    if not _world.enabled:
        return
    with torch.no_grad():
        tensors = [] if buffers_only else [p for p in module.parameters()]
        tensors += [b for b in module.buffers() if b.numel()]
        _flat_broadcast(tensors)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Mean of every parameter's gradient over ranks, as DDP computes it, in one all-reduce (used
    where DDP cannot wrap the model: the double backward of Model Doctor's channel loss)."""
    if not _world.enabled:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    # one count per parameter rides along: a parameter no rank gave a gradient keeps grad None, so
    # the optimiser skips it (momentum and weight decay included) as it does in one process
    dtype, device = grads[0].dtype, grads[0].device
    present = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
    flat = torch.cat([*(g.reshape(-1) for g in grads), present])
    all_reduce_sum(flat)
    flat /= _world.size
    offset = 0
    for p, used in zip(params, flat[-len(params) :].tolist(), strict=True):
        n = p.numel()
        chunk = flat[offset : offset + n].view_as(p)
        if not used:
            p.grad = None
        elif p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


# --------------------------------------------------------------------------- synchronised BatchNorm


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch for CPU ranks (torch's SyncBatchNorm takes CUDA tensors only).

    Per channel, the ranks' sums, sums of squares and counts are all-reduced with a differentiable
    all-reduce, so forward and backward equal BatchNorm on the concatenated batch. Same parameter and
    buffer names as nn.BatchNorm*d: checkpoints load into either."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and _world.enabled):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        xd = x.double()
        count = torch.full((1,), float(x.numel() // channels), dtype=torch.float64)
        stats = all_reduce_differentiable(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), float(n.detach()))
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (xd - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        out = out.to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm*d of ``module`` synchronised over the ranks (torch's on CUDA, ours on the CPU)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device_type))
    return out
