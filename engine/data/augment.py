"""Batched augmentation on the device: pad-crop, flips, rotation and normalisation from uint8.

One batch is transformed with a handful of tensor ops, whatever its size, for in-memory and streamed
data alike. Random parameters are drawn per *epoch* for every sample position (``draw_params``) from a
seeded generator, so a batch's augmentation depends only on (seed, epoch, position): that is what
makes a resumed run bit-identical. The whole epoch's parameters go to the device in one copy per
tensor, the first time a batch needs them (not four small pageable copies per batch).

Rotation is torchvision's ``RandomRotation(degrees)`` with its defaults (angle ~ U(-d, d) per sample,
counter-clockwise for a positive angle, about the image centre, nearest neighbour, fill 0), applied
after crop and flip as the reference's CIFAR-100 transform lists it, on uint8 pixels before
normalisation (so the fill is black, not the mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
    angle: torch.Tensor | None = None  # float32 [N] degrees; None: no rotation
    _on: dict[str, AugmentParams] = field(default_factory=dict, repr=False)

    def tensors(self) -> tuple[torch.Tensor | None, ...]:
        return (self.dy, self.dx, self.hflip, self.vflip, self.angle)

    def to(self, device: torch.device) -> AugmentParams:
        """The parameters on ``device``: copied once, then reused by every batch of the epoch."""
        key = str(device)
        if key not in self._on:
            self._on[key] = AugmentParams(*(t.to(device) if t is not None else None for t in self.tensors()))
        return self._on[key]

    def slice(self, start: int, stop: int, device: torch.device) -> AugmentParams:
        return AugmentParams(*(t[start:stop] if t is not None else None for t in self.to(device).tensors()))


def resolve_rotation(
    name: str, rotation_degrees: float | None, imbalance_ratio: float, augment: str
) -> float:
    """data.rotation_degrees, or its "auto" value: 15 for the balanced ``cifar100`` (both reference
    repos' cifar-100 loaders add RandomRotation(15), reference-spec.md §1.4), 0 otherwise (their CIFAR-LT
    loaders and every other dataset do not rotate; nor does ``augment = "none"``)."""
    if rotation_degrees is not None:
        return float(rotation_degrees)
    return 15.0 if name == "cifar100" and imbalance_ratio == 1 and augment != "none" else 0.0


def draw_params(
    n: int, augment: str, pad: int, generator: torch.Generator, rotation: float = 0.0
) -> AugmentParams:
    """Random parameters for ``n`` samples. Always draws the same streams, whatever ``augment``;
    a rotation draws its angles after them, so turning it on leaves crops and flips as they were."""
    crop = augment in ("crop_flip", "crop") and pad > 0
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator) if pad > 0 else torch.zeros(2, n)
    flips = torch.rand(2, n, generator=generator) < 0.5
    if not crop:
        offsets = torch.full((2, n), pad)
    hflip = flips[0] if augment in ("crop_flip", "flip", "flip_vflip") else torch.zeros(n, dtype=torch.bool)
    vflip = flips[1] if augment == "flip_vflip" else torch.zeros(n, dtype=torch.bool)
    angle = (torch.rand(n, generator=generator) * 2.0 - 1.0) * rotation if rotation > 0 else None
    return AugmentParams(offsets[0].long(), offsets[1].long(), hflip, vflip, angle)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by ``degrees[b]`` about its centre (nearest, fill 0).

    One ``affine_grid`` + ``grid_sample`` for the batch. The output pixel at offset p from the centre
    (x right, y down, in pixels) samples the input at R p, R the rotation by -degrees in those axes;
    the pixel offsets are scaled to grid_sample's [-1, 1] coordinates per axis, so non-square images
    rotate rigidly too. Works on any dtype: nearest sampling returns input values (or 0) exactly.
    """
    b, _c, h, w = images.shape
    rad = degrees.to(torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    # normalised -> pixels: x * w/2, y * h/2; the rotation; pixels -> normalised
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (h / w), zero], dim=1),
            torch.stack([sin * (w / h), cos, zero], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    out = F.grid_sample(images.float(), grid.to(images.device), mode="nearest", align_corners=False)
    return out.round_().to(images.dtype) if not images.is_floating_point() else out.to(images.dtype)


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
    if params.angle is not None:
        out = rotate(out, params.angle)
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
