"""Batched augmentation on the device: pad-crop, flips and normalisation from uint8.

One batch is transformed with a handful of tensor ops, whatever its size, for in-memory and streamed
data alike. Random parameters are drawn per *epoch* for every sample position (``draw_params``) from a
seeded generator, so a batch's augmentation depends only on (seed, epoch, position): that is what
makes a resumed run bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENTS = ("crop_flip", "crop", "flip", "flip_vflip", "none")


@dataclass
class AugmentParams:
    """Per-sample random choices: crop offsets in [0, 2*pad] and flip flags."""

    dy: torch.Tensor  # int64 [N]
    dx: torch.Tensor  # int64 [N]
    hflip: torch.Tensor  # bool [N]
    vflip: torch.Tensor  # bool [N]

    def slice(self, start: int, stop: int, device: torch.device) -> AugmentParams:
        return AugmentParams(
            *(t[start:stop].to(device, non_blocking=True) for t in (self.dy, self.dx, self.hflip, self.vflip))
        )


def draw_params(n: int, augment: str, pad: int, generator: torch.Generator) -> AugmentParams:
    """Random parameters for ``n`` samples. Always draws the same streams, whatever ``augment``."""
    crop = augment in ("crop_flip", "crop") and pad > 0
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator) if pad > 0 else torch.zeros(2, n)
    flips = torch.rand(2, n, generator=generator) < 0.5
    if not crop:
        offsets = torch.full((2, n), pad)
    hflip = flips[0] if augment in ("crop_flip", "flip", "flip_vflip") else torch.zeros(n, dtype=torch.bool)
    vflip = flips[1] if augment == "flip_vflip" else torch.zeros(n, dtype=torch.bool)
    return AugmentParams(offsets[0].long(), offsets[1].long(), hflip, vflip)


def crop_flip(
    images: torch.Tensor, params: AugmentParams, pad: int, augment: str = "crop_flip"
) -> torch.Tensor:
    """Zero-pad by ``pad`` and take the shifted crop, then flip; works on any dtype and channel count.

    Zero padding of uint8 pixels is torchvision's ``RandomCrop(size, padding=pad)`` (fill 0 before
    ToTensor/Normalize), the reference's CIFAR transform.
    """
    b, _c, h, w = images.shape
    out = images
    # Decided by the augment name, not by the parameters' values: no host sync on the hot path.
    if pad > 0 and augment in ("crop_flip", "crop"):
        padded = F.pad(images, (pad, pad, pad, pad))
        # Every crop position as a view [B, C, 2p+1, 2p+1, H, W]; pick one per sample (one gather).
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)
        out = windows[torch.arange(b, device=images.device), :, params.dy, params.dx]
    if augment in ("crop_flip", "flip", "flip_vflip"):
        out = torch.where(params.hflip[:, None, None, None], out.flip(3), out)
    if augment == "flip_vflip":
        out = torch.where(params.vflip[:, None, None, None], out.flip(2), out)
    return out


class Normalizer:
    """uint8 -> float (x/255 - mean)/std as one fused multiply-add, optionally channels-last."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        out = torch.addcmul(self.shift, images.float(), self.scale)
        # Converting the float result is faster than normalising a channels-last uint8 tensor.
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out
