"""``synthetic``: procedurally generated class-conditional images of any size, seeded.

Each class has a prototype: a coarse random colour pattern (4x4 cells, upsampled smoothly) drawn
from the data seed. A sample is its prototype shifted by a few pixels, scaled in brightness and
covered in pixel noise; ``difficulty`` (0-1) scales the noise and the shift. The images need no
download, learn quickly (tests, the demo, benchmarks) and obey the long-tail construction of
reference-spec.md §1.2 like every other dataset.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from engine.data import DATASETS
from engine.data.base import DataBundle, Split
from engine.data.build import embedded_bundle
from engine.data.longtail import longtail_counts
from engine.data.presets import Preset
from engine.schema.config import DataConfig

DEFAULT_CLASSES = 10
DEFAULT_SIZE = 32


def _prototypes(num_classes: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    coarse = torch.rand(num_classes, channels, 4, 4, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _samples(
    prototypes: torch.Tensor, labels: torch.Tensor, difficulty: float, generator: torch.Generator
) -> torch.Tensor:
    n = labels.shape[0]
    size = prototypes.shape[-1]
    base = prototypes[labels]
    max_shift = max(1, round(size * 0.1 * (0.5 + difficulty)))
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator)
    # Vectorised roll: gather with per-sample offsets (no loop over samples).
    ar = torch.arange(size)
    rows = (ar[None, :] - shifts[:, :1]) % size
    cols = (ar[None, :] - shifts[:, 1:]) % size
    base = base.gather(2, rows[:, None, :, None].expand(-1, base.shape[1], -1, size))
    base = base.gather(3, cols[:, None, None, :].expand(-1, base.shape[1], size, -1))
    brightness = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=generator)
    noise = torch.randn(base.shape, generator=generator) * (0.05 + 0.45 * difficulty)
    return ((base * brightness + noise).clamp(0, 1) * 255).round().to(torch.uint8)


@DATASETS.register("synthetic")
def build_synthetic(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    num_classes = cfg.num_classes or DEFAULT_CLASSES
    size = cfg.image_size or DEFAULT_SIZE
    # The data depends on subset_seed only, so runs with different training seeds share their data.
    gen = torch.Generator().manual_seed(10_007 + cfg.subset_seed)
    protos = _prototypes(num_classes, cfg.channels, size, gen)
    # Generated directly at the long-tailed counts of reference-spec.md §1.2 (the images are i.i.d.).
    counts = longtail_counts(
        cfg.samples_per_class, num_classes, cfg.imbalance_ratio, cfg.imbalance_profile, cfg.imbalance_reverse
    )
    train_labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(counts))
    test_labels = torch.arange(num_classes).repeat_interleave(cfg.test_per_class)
    train = Split(
        labels=train_labels,
        ids=[f"train/{i}" for i in range(len(train_labels))],
        images=_samples(protos, train_labels, cfg.difficulty, gen),
    )
    test = Split(
        labels=test_labels,
        ids=[f"test/{i}" for i in range(len(test_labels))],
        images=_samples(protos, test_labels, cfg.difficulty, gen),
    )
    return embedded_bundle(
        "synthetic",
        cfg,
        train,
        test,
        class_names=[f"class{c}" for c in range(num_classes)],
        preset=Preset(size, "crop_flip", max(1, size // 8), "none"),
    )
