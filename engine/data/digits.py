"""``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 images), upscaled.

Always available, no download: the demo's dataset. Images are one-channel (grayscale, as
drawn; models take ``in_channels`` from the data), upscaled smoothly to ``image_size`` (default 32,
the CIFAR geometry every model of the registry accepts). The test split is a stratified, seeded
``test_fraction`` of the 1,797 images; the long-tailed subset (reference-spec.md §1.2) is then taken from
the rest with n_max = the smallest class count, so the profile is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.data import DATASETS
from engine.data.base import DataBundle, DataError, Split
from engine.data.build import embedded_bundle, stratified_split
from engine.data.longtail import longtail_counts, longtail_indices
from engine.data.presets import Preset
from engine.schema.config import DataConfig

DEFAULT_SIZE = 32
NUM_CLASSES = 10


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a runtime dependency
        raise DataError("the digits dataset needs scikit-learn: python -m pip install scikit-learn") from None
    digits = load_digits()
    images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0)[
        :, None
    ]  # [N,1,8,8] in [0,1]
    return images, torch.from_numpy(np.asarray(digits.target, dtype=np.int64))


def _upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@DATASETS.register("digits")
def build_digits(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    size = cfg.image_size or DEFAULT_SIZE
    images, labels = _load_digits()
    train_idx, test_idx = stratified_split(labels, cfg.test_fraction, cfg.subset_seed, NUM_CLASSES)
    train_labels = labels[train_idx]
    if cfg.imbalance_ratio > 1.0 and cfg.imbalance_profile != "none":
        n_max = int(torch.bincount(train_labels, minlength=NUM_CLASSES).min())
        counts = longtail_counts(
            n_max, NUM_CLASSES, cfg.imbalance_ratio, cfg.imbalance_profile, cfg.imbalance_reverse
        )
        keep = torch.from_numpy(longtail_indices(train_labels.numpy(), counts, seed=cfg.subset_seed))
        train_idx = train_idx[keep]
    pixels = _upscale(images, size)
    train = Split(
        labels=labels[train_idx], ids=[f"digits/{i}" for i in train_idx.tolist()], images=pixels[train_idx]
    )
    test = Split(
        labels=labels[test_idx], ids=[f"digits/{i}" for i in test_idx.tolist()], images=pixels[test_idx]
    )
    return embedded_bundle(
        "digits",
        cfg,
        train,
        test,
        class_names=[str(c) for c in range(NUM_CLASSES)],
        # No flips: digits are not mirror-symmetric. Pad 2 at 32 px, as the MNIST recipe (reference-spec.md §1.4).
        preset=Preset(size, "crop", max(1, size // 16), "none"),
    )
