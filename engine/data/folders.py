"""Image folders ``<root>/<train_dir|test_dir>/<class>/<file>`` and the image+mask variant (reference-spec.md §1.1).

Class order is an explicit choice. ``numeric`` (the default) sorts all-integer folder names as
numbers, so folders 0..99 keep their CIFAR labels; ``lexicographic`` sorts names as strings, the
reference's order (so "10" precedes "2"). Either way the bundle's label map records folder -> index.

Every image is decoded as RGB and resized (squashed) to image_size x image_size once: into memory
when the split is small, else on access in DataLoader workers. Masks for the spatial loss live in
``<root>/<mask_dir>/<image basename>.png`` (8-bit grey, resized with the image so that the batched
augmentation applies one geometry to both).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.data import DATASETS
from engine.data.base import DataBundle, DataError, Split
from engine.data.presets import (
    class_counts,
    folder_preset,
    keep_in_memory,
    longtail_subset,
    resolve_presentation,
    sort_class_names,
)
from engine.schema.config import DataConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
EXPECTED = (
    "expected an image folder tree <root>/<train_dir>/<class>/<image> and <root>/<test_dir>/<class>/<image> "
    f"(images: {', '.join(sorted(IMAGE_EXTENSIONS))})"
)
MASK_EXPECTED = "masks are 8-bit grey PNGs at <root>/<mask_dir>/<image basename>.png"


# --------------------------------------------------------------------------- decoding (also used by oltr)


def open_image(path: Path, mode: str) -> Image.Image:
    """The image at ``path`` in ``mode`` ("RGB" or "L"); a DataError naming the file when unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def to_chw(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def squash(image: Image.Image, size: int) -> Image.Image:
    """Resize to size x size, bilinear with antialiasing (torchvision's Resize((s, s)) on PIL)."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.BILINEAR)


def decode_image(path: Path, size: int) -> torch.Tensor:
    return to_chw(squash(open_image(path, "RGB"), size))


def decode_mask(path: Path | None, size: int) -> torch.Tensor:
    """uint8 [1, size, size]; ``None`` (no mask file) gives an all-ones (255) mask."""
    if path is None:
        return torch.full((1, size, size), 255, dtype=torch.uint8)
    return to_chw(squash(open_image(path, "L"), size))


def decode_all(paths: list[Path], decode, workers: int) -> torch.Tensor:
    """Decode every file into one stacked uint8 tensor (threads: PIL releases the GIL while decoding)."""
    if not paths:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    if workers <= 1 or len(paths) < 64:
        return torch.stack([decode(p) for p in paths])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return torch.stack(list(pool.map(decode, paths, chunksize=64)))


def native_side(path: Path) -> int:
    """The shorter side of an image, read from its header."""
    try:
        with Image.open(path) as image:
            return min(image.size)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


# --------------------------------------------------------------------------- scanning


@dataclass
class FolderSplit:
    """Files of one split and their class indices, in the reference's walk order."""

    paths: list[Path]
    labels: np.ndarray
    ids: list[str]


def is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def class_folders(split_dir: Path, name: str) -> list[str]:
    if not split_dir.is_dir():
        raise DataError(f"{name}: {split_dir} is not a folder; {EXPECTED}")
    names = [d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not names:
        raise DataError(f"{name}: {split_dir} has no class folders; {EXPECTED}")
    return names


def scan_split(root: Path, split_dir: Path, classes: list[str], name: str, require_all: bool) -> FolderSplit:
    present = set(class_folders(split_dir, name))
    unknown = sorted(present - set(classes))
    if unknown:
        raise DataError(
            f"{name}: {split_dir} has class folders {unknown[:5]} that the training folder lacks; "
            "every test class must also be a training class"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        if cls not in present:
            continue
        files = sorted(p for p in (split_dir / cls).iterdir() if is_image(p))
        if not files and require_all:
            raise DataError(f"{name}: class folder {split_dir / cls} holds no images; {EXPECTED}")
        paths.extend(files)
        labels.extend([index] * len(files))
    if not paths:
        raise DataError(f"{name}: no images under {split_dir}; {EXPECTED}")
    ids = [p.relative_to(root).as_posix() for p in paths]
    return FolderSplit(paths=paths, labels=np.asarray(labels, dtype=np.int64), ids=ids)


# --------------------------------------------------------------------------- masks


def mask_paths(root: Path, cfg: DataConfig, images: list[Path], name: str) -> tuple[list[Path | None], int]:
    """Each image's mask file; missing ones fall back to ``default_mask`` or to None (all ones)."""
    if not cfg.mask_dir:
        raise DataError(f'{name}: data.mask_dir is not set; {MASK_EXPECTED}, e.g. mask_dir = "masks"')
    mask_dir = root / cfg.mask_dir
    if not mask_dir.is_dir():
        raise DataError(f"{name}: mask folder {mask_dir} does not exist; {MASK_EXPECTED}")
    default: Path | None = None
    if cfg.default_mask:
        default = Path(cfg.default_mask).expanduser()
        default = default if default.is_absolute() else root / default
        if not default.is_file():
            raise DataError(f"{name}: data.default_mask {default} does not exist; {MASK_EXPECTED}")
    available = {p.name for p in mask_dir.iterdir() if p.is_file()}
    out: list[Path | None] = []
    missing = 0
    for image in images:
        mask_name = image.stem + ".png"  # reference: basename with its extension replaced by .png
        if mask_name in available:
            out.append(mask_dir / mask_name)
        else:
            missing += 1
            out.append(default)
    return out, missing


# --------------------------------------------------------------------------- datasets


class FolderDataset(torch.utils.data.Dataset):
    """Streams (uint8 CHW image, label[, uint8 1HW mask]) at the final size."""

    def __init__(
        self, paths: list[Path], labels: np.ndarray, size: int, masks: list[Path | None] | None = None
    ) -> None:
        self.paths = paths
        self.labels = labels
        self.size = size
        self.masks = masks

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = decode_image(self.paths[index], self.size)
        label = int(self.labels[index])
        if self.masks is None:
            return image, label
        return image, label, decode_mask(self.masks[index], self.size)


def folder_split(
    split: FolderSplit, size: int, in_memory: bool, workers: int, masks: list[Path | None] | None
) -> Split:
    labels = torch.from_numpy(split.labels)
    if not in_memory:
        return Split(
            labels=labels, ids=split.ids, dataset=FolderDataset(split.paths, split.labels, size, masks)
        )
    images = decode_all(split.paths, lambda p: decode_image(p, size), workers)
    mask_tensor = None
    if masks is not None:
        mask_tensor = decode_all(masks, lambda p: decode_mask(p, size), workers)  # type: ignore[arg-type]
    return Split(labels=labels, ids=split.ids, images=images, masks=mask_tensor)


def build_folders(cfg: DataConfig, root: Path | None, name: str, with_masks: bool) -> DataBundle:
    if root is None:
        raise DataError(
            f"{name}: data.root is not set (the folder holding {cfg.train_dir}/ and {cfg.test_dir}/); {EXPECTED}"
        )
    if not root.is_dir():
        raise DataError(f"{name}: data root {root} is not a folder; {EXPECTED}")
    train_dir, test_dir = root / cfg.train_dir, root / cfg.test_dir
    classes = sort_class_names(class_folders(train_dir, name), cfg.class_order, f"{name} at {train_dir}")
    num_classes = len(classes)
    train = scan_split(root, train_dir, classes, name, require_all=True)
    test = scan_split(root, test_dir, classes, name, require_all=False)

    keep = longtail_subset(train.labels, num_classes, cfg)
    if keep is not None:
        train = FolderSplit([train.paths[i] for i in keep], train.labels[keep], [train.ids[i] for i in keep])

    masks = None
    if with_masks:
        masks, missing = mask_paths(root, cfg, train.paths, name)
        if missing:
            fallback = f"default mask {cfg.default_mask}" if cfg.default_mask else "an all-ones mask"
            log.warning(
                "%s: %d of %d training images have no mask in %s; using %s",
                name,
                missing,
                len(masks),
                root / str(cfg.mask_dir),
                fallback,
            )

    # Without image_size every image is squashed to the first one's shorter side (CIFAR/STL exports
    # are uniform; mixed-size trees such as mini-ImageNet need image_size, e.g. 224 as the reference).
    size = cfg.image_size or native_side(train.paths[0])
    look = resolve_presentation(cfg, folder_preset(size), channels=3, native_size=size)
    channels = 4 if with_masks else 3
    in_memory = keep_in_memory(cfg, len(train.paths) + len(test.paths), channels, look.image_size)
    workers = max(1, cfg.num_workers)
    train_split = folder_split(train, look.image_size, in_memory, workers, masks)
    return DataBundle(
        name=name,
        train=train_split,
        test=folder_split(test, look.image_size, in_memory, workers, None),
        val=None,
        num_classes=num_classes,
        in_channels=3,
        image_size=look.image_size,
        class_names=list(classes),
        label_map={cls: index for index, cls in enumerate(classes)},
        mean=look.mean,
        std=look.std,
        augment=look.augment,
        pad=look.pad,
        train_counts=class_counts(train_split.labels, num_classes),
    )


@DATASETS.register("image_folder")
def image_folder(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    # mask_dir is optional here: when set, training images carry masks as in image_mask.
    return build_folders(cfg, root, "image_folder", with_masks=cfg.mask_dir is not None)


@DATASETS.register("image_mask")
def image_mask(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    return build_folders(cfg, root, "image_mask", with_masks=True)
