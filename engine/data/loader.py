"""Batches for the loop: indices, device-resident uint8 pixels and batched augmentation.

In-memory splits are copied to the device once (uint8) and indexed there; streamed splits come through
a DataLoader with workers and then get the same batched augmentation. A loader fixes its whole
epoch when it is made: the order (a permutation, the sampler's indices, or 0..N-1) and every
sample's augmentation parameters are drawn from ``generator`` up front, so ``batches(start=k)``
resumes an epoch at batch ``k`` exactly as if the first ``k`` batches had been consumed.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from engine.data.augment import AugmentParams, Normalizer, crop_flip, draw_params
from engine.data.base import DataBundle, Split
from engine.distributed import shard_bounds


@dataclass
class Batch:
    images: torch.Tensor  # float, normalised, on device (channels_last when enabled)
    labels: torch.Tensor  # int64, on device
    index: torch.Tensor  # int64 sample indices into the split
    masks: torch.Tensor | None = None  # float [B,1,H,W] in [0,1], geometrically aligned with images
    global_size: int = -1  # samples in the global batch this rank's shard belongs to (-1: this batch)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def total(self) -> int:
        """Size of the global batch (all ranks' shards together)."""
        return len(self) if self.global_size < 0 else self.global_size


@dataclass(frozen=True)
class Placement:
    """Where a run's batches go; the same for every loader of the run."""

    device: torch.device
    channels_last: bool = False
    num_workers: int = 2  # streamed splits only
    # (rank, world size): this rank takes its slice of every global batch (engine/distributed.py)
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))


def _on_device(split: Split, device: torch.device) -> dict[str, torch.Tensor | None]:
    """The split's tensors on ``device``, copied once per split and device."""
    cache = split.__dict__.setdefault("_device_tensors", {})
    key = str(device)
    if key not in cache:
        cache[key] = {
            "images": split.images.to(device) if split.images is not None else None,
            "labels": split.labels.to(device),
            "masks": split.masks.to(device) if split.masks is not None else None,
        }
    return cache[key]


def _collate(items: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    images = torch.stack([it[0] for it in items])
    labels = torch.tensor([int(it[1]) for it in items], dtype=torch.long)
    masks = torch.stack([it[2] for it in items]) if len(items[0]) > 2 else None
    return images, labels, masks


def _ignore_stop_signals(_worker_id: int) -> None:
    """Workers ignore SIGTERM/SIGINT: a stop is sent to the whole process group, and the main process
    must finish its step and save last.pt, not die of "DataLoader worker exited unexpectedly"."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Loader:
    """One epoch of batches over a split; iterable, sized, restartable at a batch position."""

    def __init__(
        self,
        bundle: DataBundle,
        split: Split,
        *,
        batch_size: int,
        train_transform: bool,
        shuffle: bool,
        placement: Placement,
        sampler=None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.bundle, self.split = bundle, split
        # Order and augmentation are drawn for the whole epoch, so the ranks' slices of one draw
        # match one process
        self.rank, self.world_size = placement.shard
        self.batch_size = batch_size
        self.device = placement.device
        self.channels_last = placement.channels_last
        self.num_workers = placement.num_workers
        if generator is None:
            # Unseeded callers still get reproducibility from the global seed.
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        if sampler is not None:
            self.order = sampler.epoch_indices(generator)
        elif shuffle:
            self.order = torch.randperm(len(split), generator=generator)
        else:
            self.order = torch.arange(len(split))
        n = int(self.order.shape[0])
        self.num_batches = math.ceil(n / batch_size)
        self.train_transform = train_transform
        self.augment = bundle.augment if train_transform else "none"
        self.params: AugmentParams | None = None
        rotation = bundle.rotation if train_transform else 0.0
        if self.augment != "none" or rotation > 0:
            self.params = draw_params(n, self.augment, bundle.pad, generator, rotation=rotation)
        self.normalize = Normalizer(bundle.mean, bundle.std, self.device)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[Batch]:
        if self.split.in_memory:
            yield from self._memory_batches(start)
        else:
            yield from self._streamed_batches(start)

    def _global_bounds(self, position: int) -> tuple[int, int]:
        lo = position * self.batch_size
        return lo, min(lo + self.batch_size, int(self.order.shape[0]))

    def _bounds(self, position: int) -> tuple[int, int]:
        """This rank's slice of the global batch at ``position``."""
        lo, hi = self._global_bounds(position)
        if self.world_size == 1:
            return lo, hi
        return shard_bounds(lo, hi, self.rank, self.world_size)

    def _global_size(self, position: int) -> int:
        lo, hi = self._global_bounds(position)
        return hi - lo

    def _finish(self, position: int, images, labels, masks, index) -> Batch:
        lo, hi = self._bounds(position)
        if self.params is not None:
            params = self.params.slice(lo, hi, self.device)
            images = crop_flip(images, params, self.bundle.pad, self.augment)
            if masks is not None:
                masks = crop_flip(masks, params, self.bundle.pad, self.augment)
        out_masks = masks.float().div_(255.0) if masks is not None else None
        images = self.normalize(images, self.channels_last)
        return Batch(images, labels, index, out_masks, global_size=self._global_size(position))

    def _memory_batches(self, start: int) -> Iterator[Batch]:
        tensors = _on_device(self.split, self.device)
        order = self.order.to(self.device)
        for position in range(start, self.num_batches):
            lo, hi = self._bounds(position)
            idx = order[lo:hi]
            masks = tensors["masks"][idx] if tensors["masks"] is not None else None
            yield self._finish(position, tensors["images"][idx], tensors["labels"][idx], masks, idx)

    def _streamed_batches(self, start: int) -> Iterator[Batch]:
        batches = [self.order[slice(*self._bounds(p))].tolist() for p in range(start, self.num_batches)]
        loader, plan = _stream_loader(self.split, self.train_transform, self.num_workers, self.device)
        plan.batches = batches
        for position, (images, labels, masks) in enumerate(loader, start=start):
            lo, hi = self._bounds(position)
            nb = self.device.type == "cuda"
            images = images.to(self.device, non_blocking=nb)
            labels = labels.to(self.device, non_blocking=nb)
            masks = masks.to(self.device, non_blocking=nb) if masks is not None else None
            yield self._finish(position, images, labels, masks, self.order[lo:hi].to(self.device))


class _BatchPlan:
    """A batch sampler whose batches are replaced before each pass: a DataLoader with persistent
    workers keeps its sampler, and the main process reads the plan anew at every iteration."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _stream_loader(
    split: Split, train: bool, num_workers: int, device: torch.device
) -> tuple[torch.utils.data.DataLoader, _BatchPlan]:
    """One DataLoader per split, geometry and device for the whole run: its workers persist across
    epochs and evaluation passes instead of being started (and their dataset state rebuilt) each time."""
    cache = split.__dict__.setdefault("_stream_loaders", {})
    key = (train, num_workers, str(device))
    if key not in cache:
        plan = _BatchPlan()
        workers = num_workers > 0
        loader = torch.utils.data.DataLoader(
            geometry_for(split.dataset, train),
            batch_sampler=plan,
            num_workers=num_workers,
            collate_fn=_collate,
            worker_init_fn=_ignore_stop_signals if workers else None,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=workers,
        )
        cache[key] = (loader, plan)
    return cache[key]


def geometry_for(dataset: Any, train: bool) -> Any:
    """A streamed dataset with per-sample geometry for training or test passes (image sift runs
    test-time geometry over the train split); datasets without such geometry are returned as they are."""
    if isinstance(dataset, torch.utils.data.Subset):
        return torch.utils.data.Subset(geometry_for(dataset.dataset, train), dataset.indices)
    switch = getattr(dataset, "with_train_transform", None)
    return switch(train) if callable(switch) else dataset


def make_loader(
    bundle: DataBundle,
    split: Split | str,
    *,
    batch_size: int,
    train_transform: bool,
    shuffle: bool,
    placement: Placement | torch.device | str,
    sampler=None,
    generator: torch.Generator | None = None,
) -> Loader:
    """``split`` is a Split or the name of one ("train", "test", "val"); ``placement`` a Placement
    or just a device."""
    if isinstance(split, str):
        chosen = getattr(bundle, split, None)
        if not isinstance(chosen, Split):
            raise ValueError(f'the data has no "{split}" split')
        split = chosen
    return Loader(
        bundle,
        split,
        batch_size=batch_size,
        train_transform=train_transform,
        shuffle=shuffle,
        placement=placement if isinstance(placement, Placement) else Placement(placement),
        sampler=sampler,
        generator=generator,
    )
