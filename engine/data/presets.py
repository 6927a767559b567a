"""How a dataset is presented to the loop (reference-spec.md §1.4).

Per dataset: the final image size, the train augmentation the batched on-device augmenter applies,
its crop padding and the normalisation constants, each overridable from ``DataConfig``
(``image_size``, ``augment``, ``normalize``). Also the helpers every array-backed builder shares:
the long-tailed subset of section 1.2, the in-memory/streaming decision and a resize done once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.base import DataBundle, DataError, Split
from engine.data.longtail import longtail_counts, longtail_indices
from engine.schema.config import DataConfig

# Section 1.4. CIFAR-10 constants are also the reference's choice for CIFAR-100-LT.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.50708, 0.48655, 0.44092), (0.26733, 0.25644, 0.27615)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inat": ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.286,), (0.353,)),
    "none": ((0.0,), (1.0,)),
}

# Datasets whose final size is at most this use the CIFAR recipe when the preset depends on size.
SMALL_IMAGE_MAX = 64

# Split data lives in memory (and on the device) when the final uint8 pixels of all splits fit
# in this many bytes; above it, images stream through DataLoader workers. STL-10 at 224 (1.96 GB)
# stays in memory; CIFAR at 224 (9 GB) streams.
IN_MEMORY_MAX_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Preset:
    """A dataset's reference presentation before DataConfig overrides."""

    image_size: int | None  # None: the images' own size
    augment: str  # crop_flip | crop | flip | flip_vflip | none
    pad: int
    normalize: str  # a key of NORMALIZATION


# Section 1.4 tables. CIFAR: pad4-crop + HFlip (also at 64, the FORK's AlexNet setting);
# STL-10 / mini-ImageNet: Resize 224 + HFlip + VFlip; OLTR: RandomResizedCrop (in the workers) + HFlip.
CIFAR_STYLE = Preset(32, "crop_flip", 4, "cifar10")
IMAGENET_STYLE = Preset(224, "flip_vflip", 0, "imagenet")
OLTR_STYLE = Preset(224, "flip", 0, "imagenet")
MNIST_STYLE = Preset(32, "crop", 2, "mnist")
FASHION_MNIST_STYLE = Preset(32, "crop_flip", 2, "fashion_mnist")


@dataclass(frozen=True)
class Presentation:
    """The resolved facts a DataBundle carries about its images."""

    image_size: int
    augment: str
    pad: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def folder_preset(image_size: int) -> Preset:
    """Image folders hold anything: small images get the CIFAR recipe, large ones the ImageNet one."""
    if image_size <= SMALL_IMAGE_MAX:
        return Preset(image_size, CIFAR_STYLE.augment, CIFAR_STYLE.pad, CIFAR_STYLE.normalize)
    return Preset(image_size, IMAGENET_STYLE.augment, IMAGENET_STYLE.pad, IMAGENET_STYLE.normalize)


def normalization(name: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std for ``channels`` channels; one-channel constants are repeated."""
    if name not in NORMALIZATION:
        raise DataError(f'unknown normalisation "{name}"; valid: {", ".join(NORMALIZATION)}')
    mean, std = NORMALIZATION[name]
    if len(mean) == 1:
        return mean * channels, std * channels
    if len(mean) != channels:
        raise DataError(
            f'data.normalize = "{name}" has {len(mean)} channels but the images have {channels}; '
            f'choose "mnist", "none" or a {channels}-channel normalisation'
        )
    return mean, std


def resolve_presentation(cfg: DataConfig, preset: Preset, channels: int, native_size: int) -> Presentation:
    """Apply ``image_size``, ``augment`` and ``normalize`` from the config over the preset."""
    size = cfg.image_size or preset.image_size or native_size
    if size < 1:
        raise DataError(f"data.image_size must be a positive number of pixels, got {size}")
    augment = preset.augment if cfg.augment == "auto" else cfg.augment
    pad = preset.pad if augment in ("crop_flip", "crop") else 0
    if augment in ("crop_flip", "crop") and pad == 0:
        pad = 4  # "crop" chosen explicitly on a preset without padding: the CIFAR default
    norm = preset.normalize if cfg.normalize == "auto" else cfg.normalize
    mean, std = normalization(norm, channels)
    return Presentation(image_size=size, augment=augment, pad=pad, mean=mean, std=std)


def keep_in_memory(cfg: DataConfig, num_images: int, channels: int, image_size: int) -> bool:
    """``in_memory``: yes / no, or auto by the total uint8 pixel bytes at the final size."""
    if cfg.in_memory == "yes":
        return True
    if cfg.in_memory == "no":
        return False
    return num_images * channels * image_size * image_size <= IN_MEMORY_MAX_BYTES


def longtail_subset(labels: np.ndarray, num_classes: int, cfg: DataConfig) -> np.ndarray | None:
    """Indices of the long-tailed training subset (section 1.2), or None when balanced.

    n_max = N_train / C as in the reference (5000 for CIFAR-10, 500 for CIFAR-100); the kept
    indices come out grouped by class in ascending label order, as the reference stores them.
    """
    if cfg.imbalance_ratio <= 1.0 or cfg.imbalance_profile == "none":
        return None
    n_max = len(labels) / num_classes
    counts = longtail_counts(
        n_max, num_classes, cfg.imbalance_ratio, cfg.imbalance_profile, cfg.imbalance_reverse
    )
    return longtail_indices(labels, counts, seed=cfg.subset_seed)


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] to size x size once, bilinear with antialiasing (as PIL's Resize)."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        out[start : start + chunk] = _resize_block(images[start : start + chunk], size)
    return out


def _resize_block(block: torch.Tensor, size: int) -> torch.Tensor:
    # PyTorch's uint8 channels-last kernel is ~15x faster than going through float on CPU.
    try:
        cl = block.contiguous(memory_format=torch.channels_last)
        return F.interpolate(cl, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    except RuntimeError:  # builds without the uint8 kernel
        resized = F.interpolate(
            block.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        return resized.round_().clamp_(0, 255).to(torch.uint8)


class ResizedArrayDataset(torch.utils.data.Dataset):
    """Streams images of an in-RAM uint8 array, resizing each one to the final size on access.

    Used when the resized split would not fit in memory (CIFAR at 224): the 32x32 source stays in
    RAM and workers resize per sample.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        self.images = images
        self.labels = labels
        self.size = size

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = resize_uint8(self.images[index : index + 1], self.size)[0]
        return image, int(self.labels[index])


def array_split(
    images: torch.Tensor, labels: torch.Tensor, ids: list[str], size: int, in_memory: bool
) -> Split:
    """A split of array-backed images: resized once in memory, or streamed with per-sample resizing."""
    if in_memory:
        return Split(labels=labels, ids=ids, images=resize_uint8(images, size))
    return Split(labels=labels, ids=ids, dataset=ResizedArrayDataset(images, labels, size))


def array_bundle(
    name: str,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    cfg: DataConfig,
    look: Presentation,
    class_names: list[str],
    label_map: dict[str, int],
) -> DataBundle:
    """A bundle of uint8 arrays (CIFAR, STL-10): ``train`` is (images, labels, original indices) after
    the LT subset, ``test`` (images, labels); kept in memory or streamed by their total size."""
    (train_x, train_y, train_ids), (test_x, test_y) = train, test
    num_classes = len(class_names)
    in_memory = keep_in_memory(cfg, len(train_y) + len(test_y), 3, look.image_size)
    train_labels = torch.from_numpy(train_y)
    return DataBundle(
        name=name,
        train=array_split(
            torch.from_numpy(train_x),
            train_labels,
            [f"train/{i}" for i in train_ids.tolist()],
            look.image_size,
            in_memory,
        ),
        test=array_split(
            torch.from_numpy(test_x),
            torch.from_numpy(test_y),
            [f"test/{i}" for i in range(len(test_y))],
            look.image_size,
            in_memory,
        ),
        val=None,
        num_classes=num_classes,
        in_channels=3,
        image_size=look.image_size,
        class_names=class_names,
        label_map=label_map,
        mean=look.mean,
        std=look.std,
        augment=look.augment,
        pad=look.pad,
        train_counts=class_counts(train_labels, num_classes),
    )


def sort_class_names(names: list[str], class_order: str, where: str) -> list[str]:
    """Class keys in index order: ``numeric`` (all-integer names, sorted as numbers) or
    ``lexicographic`` (sorted as strings, the reference's order: section 1.1, so "10" comes before "2")."""
    if class_order == "lexicographic":
        return sorted(names)
    non_numeric = [n for n in names if not n.isdecimal()]
    if non_numeric:
        shown = ", ".join(repr(n) for n in sorted(non_numeric)[:3])
        raise DataError(
            f'{where}: class_order = "numeric" needs class names that are all integers, but found {shown}; '
            'set data.class_order = "lexicographic" to sort them as strings (the reference\'s order)'
        )
    return sorted(names, key=lambda n: (int(n), n))
