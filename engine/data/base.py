"""What every dataset builder returns: splits of uint8 images plus the facts the loop needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(Exception):
    """A dataset is missing or malformed: the message names the path and the format expected."""


@dataclass
class Split:
    """One split. Images are uint8 at the final size, in memory or streamed by a Dataset."""

    labels: torch.Tensor  # int64 [N], CPU
    ids: list[str]  # stable id per sample: a relative path, or "train/123"
    images: torch.Tensor | None = None  # uint8 [N, C, H, W] when in memory (CPU)
    dataset: torch.utils.data.Dataset | None = (
        None  # streaming: ds[i] -> (uint8 CHW, label[, uint8 1HW mask])
    )
    masks: torch.Tensor | None = None  # uint8 [N, 1, H, W] foreground masks, in memory

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, index: torch.Tensor) -> Split:
        """The samples at ``index`` (a streamed split keeps its dataset behind a Subset)."""
        idx = index.tolist()
        return Split(
            labels=self.labels[index],
            ids=[self.ids[i] for i in idx],
            images=self.images[index] if self.images is not None else None,
            dataset=torch.utils.data.Subset(self.dataset, idx) if self.dataset is not None else None,
            masks=self.masks[index] if self.masks is not None else None,
        )


@dataclass
class DataBundle:
    name: str
    train: Split
    test: Split
    val: Split | None
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    label_map: dict[str, int] | None  # folder/name -> class index; written to artifacts/label_map.json
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # resolved train augmentation: crop_flip | crop | flip | flip_vflip | none
    pad: int  # crop padding in pixels
    train_counts: list[int]  # per-class training counts (after the LT subset and the val split)
    rotation: float = 0.0  # train RandomRotation degrees (engine/data/augment.py), set by build_data
