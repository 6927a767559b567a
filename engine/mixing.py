"""Mixup and CutMix for any run (issue #15), batched on the device.

One lambda and one partner permutation per batch, as in Zhang et al.'s and MiSLAS's ``mixup_data`` and
Yun et al.'s CutMix: x' = lam x + (1 - lam) x[perm] (mixup), or x with the box of x[perm] pasted in
(cutmix, lam then corrected to 1 - box area / image area). The loss is
lam * loss(logits, y) + (1 - lam) * loss(logits, y[perm]) for whatever ``loss`` the run uses
(MiSLAS ``mixup_criterion``).

Everything random is drawn for the whole epoch when the mixer is made, from a generator that is a pure
function of (seed, epoch) -- separate from the loader's, so runs without mixing keep their streams --
and copied to the device once. A resumed epoch therefore mixes its remaining batches exactly as the
uninterrupted run did, and a step does no host work beyond indexing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.data.loader import Batch
from engine.schema.config import MixConfig


@dataclass
class MixedBatch(Batch):
    """A batch whose images were mixed: ``labels`` weighs ``lam``, ``partner`` labels 1 - lam."""

    partner: torch.Tensor | None = None  # int64 [B], the labels of the mixed-in samples
    lam: torch.Tensor | None = None  # float32 scalar on the device


def mix_generator(seed: int, epoch: int) -> torch.Generator:
    digest = hashlib.blake2b(f"mdtui-mix:{seed}:{epoch}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


@dataclass
class MixDraws:
    """One epoch's random choices, per batch position (host tensors until ``EpochMixer`` moves them)."""

    lam: torch.Tensor  # float64 [N]: Beta(alpha, alpha), or 1.0 for a batch left unmixed
    keys: torch.Tensor  # float32 [N, batch_size]: argsort of a row's first n keys = the permutation
    centre: torch.Tensor  # float64 [N, 2]: cutmix box centre as a fraction of (H, W), in [0, 1)


def draw_mix(cfg: MixConfig, num_batches: int, batch_size: int, generator: torch.Generator) -> MixDraws:
    """The epoch's draws. Beta has no seeded torch sampler, so numpy's is seeded from ``generator``."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    lam = rng.beta(cfg.alpha, cfg.alpha, size=num_batches)
    applied = rng.random(num_batches) < cfg.prob
    centre = rng.random((num_batches, 2))
    keys = torch.rand(num_batches, batch_size, generator=generator)
    lam_t = torch.from_numpy(np.where(applied, lam, 1.0))
    return MixDraws(lam_t, keys, torch.from_numpy(centre))


def cutmix_boxes(
    lam: torch.Tensor, centre: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes int64 [N, 4] = y1, y2, x1, x2; lam corrected by the box area, float64 [N]).

    CutMix's ``rand_bbox``: cut side = int(side * sqrt(1 - lam)), centre c = int(u * side), box
    [c - cut//2, c + cut//2) clipped to the image. lam = 1 (an unmixed batch) gives an empty box.
    """
    ratio = torch.sqrt(1.0 - lam)
    cut_h = (height * ratio).floor().long()
    cut_w = (width * ratio).floor().long()
    cy = (centre[:, 0] * height).floor().long()
    cx = (centre[:, 1] * width).floor().long()
    y1, y2 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    x1, x2 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    area = ((y2 - y1) * (x2 - x1)).double()
    return torch.stack([y1, y2, x1, x2], dim=1), 1.0 - area / (height * width)


class EpochMixer:
    """Mixes one epoch's batches; ``mix(batch, position)`` for the batch at ``position``."""

    def __init__(self, cfg: MixConfig, draws: MixDraws, device: torch.device) -> None:
        self.method = cfg.method
        self.draws = draws
        self.device = torch.device(device)
        self.keys = draws.keys.to(self.device)
        self.lam = draws.lam.float().to(self.device)
        self.boxes: torch.Tensor | None = None
        self._shape: tuple[int, int] | None = None

    def _cutmix_tables(self, height: int, width: int) -> torch.Tensor:
        """Boxes (and corrected lam) for this image size, computed once per epoch on the host."""
        if self._shape != (height, width):
            boxes, lam = cutmix_boxes(self.draws.lam, self.draws.centre, height, width)
            self.boxes, self.lam = boxes.to(self.device), lam.float().to(self.device)
            self._shape = (height, width)
        assert self.boxes is not None
        return self.boxes

    def mix(self, batch: Batch, position: int) -> MixedBatch:
        n = len(batch)
        perm = self.keys[position, :n].argsort()
        images = batch.images
        if self.method == "cutmix":
            height, width = images.shape[-2:]
            y1, y2, x1, x2 = self._cutmix_tables(height, width)[position]
            rows = torch.arange(height, device=images.device)
            cols = torch.arange(width, device=images.device)
            inside = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
            mixed = torch.where(inside, images[perm], images)
        else:
            lam = self.lam[position].to(images.dtype)
            mixed = images * lam + images[perm] * (1.0 - lam)
        # every field of the batch kept (a rank's shard keeps its global batch size), images mixed
        kept = {f.name: getattr(batch, f.name) for f in dataclasses.fields(Batch)}
        return MixedBatch(**{**kept, "images": mixed}, partner=batch.labels[perm], lam=self.lam[position])


def mix_batches(
    cfg: MixConfig,
    batches: Iterable[Batch],
    *,
    seed: int,
    epoch: int,
    num_batches: int,
    batch_size: int,
    device: torch.device,
    start: int = 0,
) -> Iterable[Batch]:
    """``batches`` (positioned at ``start``) mixed as ``cfg`` says; unchanged for method "none"."""
    if cfg.method == "none":
        return batches
    draws = draw_mix(cfg, num_batches, batch_size, mix_generator(seed, epoch))
    mixer = EpochMixer(cfg, draws, device)
    return _mixed(mixer, batches, start)


def _mixed(mixer: EpochMixer, batches: Iterable[Batch], start: int) -> Iterator[Batch]:
    for position, batch in enumerate(batches, start=start):
        yield mixer.mix(batch, position)


def mixed_loss(criterion: nn.Module, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The classification loss of a batch: lam-weighted over both label sets for a mixed one."""
    if isinstance(batch, MixedBatch) and batch.partner is not None and batch.lam is not None:
        lam = batch.lam
        return lam * criterion(logits, batch.labels) + (1.0 - lam) * criterion(logits, batch.partner)
    return criterion(logits, batch.labels)
