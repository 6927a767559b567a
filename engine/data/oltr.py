"""OLTR list files (ImageNet-LT, ImageNet-10-LT, iNaturalist-2018), reference-spec.md §1.3.

Each line of ``<root>/<train_list>`` and ``<root>/<eval_list>`` is ``<relative image path> <label>``;
the image is ``<root>/<relative path>`` and labels are used as they are, 0..C-1, with exactly C
distinct labels in each list. Images stream through DataLoader workers: training images get
RandomResizedCrop(size) there (the per-sample geometry), evaluation images Resize(size*256/224) +
CenterCrop(size); the batched augmenter then flips and normalises.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.data import DATASETS
from engine.data.base import DataBundle, DataError, Split
from engine.data.folders import decode_all, open_image, to_chw
from engine.data.presets import OLTR_STYLE, Preset, class_counts, resolve_presentation
from engine.schema.config import DataConfig

log = logging.getLogger(__name__)

EXPECTED = (
    "expected OLTR list files under the data root: one '<relative image path> <integer label>' per line "
    "(e.g. ImageNet_LT_train.txt, ImageNet_LT_test.txt), each image at <root>/<relative path>"
)
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def read_list(path: Path) -> tuple[list[str], np.ndarray]:
    """Relative paths and integer labels of one list file."""
    if not path.is_file():
        raise DataError(f"oltr: list file {path} does not exist; {EXPECTED}")
    rel_paths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        parts = text.rsplit(None, 1)  # the label is the last field; a path may contain spaces
        if len(parts) != 2 or not parts[1].lstrip("-").isdecimal():
            raise DataError(
                f"{path}:{number}: {text[:80]!r} is not '<relative image path> <integer label>'; {EXPECTED}"
            )
        rel_paths.append(parts[0])
        labels.append(int(parts[1]))
    if not rel_paths:
        raise DataError(f"oltr: list file {path} holds no samples; {EXPECTED}")
    return rel_paths, np.asarray(labels, dtype=np.int64)


def check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """reference-spec.md §1.3: exactly C distinct labels, all in 0..C-1."""
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            f"{path}: labels must lie in 0..{num_classes - 1} (data.num_classes = {num_classes}), "
            f"found {low}..{high}; re-index the list or set data.num_classes"
        )
    distinct = len(np.unique(labels))
    if distinct != num_classes:
        raise DataError(
            f"{path}: {distinct} distinct labels, expected exactly {num_classes} (data.num_classes); "
            "every class must appear in both lists"
        )


def check_images_exist(root: Path, list_path: Path, rel_paths: list[str]) -> None:
    """The first and last images must exist (a full scan of 400k files costs minutes on NFS)."""
    for rel in {rel_paths[0], rel_paths[-1]}:
        if not (root / rel).is_file():
            raise DataError(f"{list_path}: image {root / rel} does not exist; {EXPECTED}")


def random_resized_box(width: int, height: int) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom), drawn from torch's RNG (seeded per worker)."""
    area = width * height
    log_low, log_high = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*RRC_SCALE).item()
        aspect = math.exp(torch.empty(1).uniform_(log_low, log_high).item())
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)).item())
            left = int(torch.randint(0, width - w + 1, (1,)).item())
            return left, top, left + w, top + h
    ratio = width / height  # fallback: the whole image clipped to the ratio range, centred
    if ratio < RRC_RATIO[0]:
        w, h = width, int(round(width / RRC_RATIO[0]))
    elif ratio > RRC_RATIO[1]:
        w, h = int(round(height * RRC_RATIO[1])), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def center_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Resize(shorter side -> size*256/224) then CenterCrop(size): the resized size and the crop box."""
    short = int(size * 256 / 224)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return (new_w, new_h), (left, top, left + size, top + size)


def decode_eval(path: Path, size: int) -> torch.Tensor:
    image = open_image(path, "RGB")
    resized, box = center_box(image.width, image.height, size)
    return to_chw(image.resize(resized, Image.BILINEAR).crop(box))


def decode_train(path: Path, size: int) -> torch.Tensor:
    image = open_image(path, "RGB")
    box = random_resized_box(image.width, image.height)
    return to_chw(image.resize((size, size), Image.BILINEAR, box=box))


class ListDataset(torch.utils.data.Dataset):
    """Streams (uint8 CHW at size x size, label) for one list file.

    ``random_resized_crop`` picks the geometry: True for training (the default on the train split),
    False for Resize + CenterCrop; a loader that wants test-time geometry on the train split (image
    sift) sets it to False.
    """

    def __init__(
        self, root: Path, rel_paths: list[str], labels: np.ndarray, size: int, random_resized_crop: bool
    ):
        self.root = root
        self.rel_paths = rel_paths
        self.labels = labels
        self.size = size
        self.random_resized_crop = random_resized_crop

    def __len__(self) -> int:
        return len(self.rel_paths)

    def with_train_transform(self, train: bool) -> ListDataset:
        """This list with training geometry (RandomResizedCrop) or test geometry (resize + centre crop)."""
        if train == self.random_resized_crop:
            return self
        return ListDataset(self.root, self.rel_paths, self.labels, self.size, random_resized_crop=train)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.root / self.rel_paths[index]
        if not path.is_file():
            raise DataError(f"oltr: image {path} (line {index + 1} of its list) does not exist; {EXPECTED}")
        decode = decode_train if self.random_resized_crop else decode_eval
        return decode(path, self.size), int(self.labels[index])


def preset_for(root: Path, cfg: DataConfig) -> Preset:
    """iNaturalist has its own normalisation constants (reference-spec.md §1.3); every other list uses ImageNet's."""
    hint = f"{root.name} {cfg.train_list}".lower()
    normalize = "inat" if "inat" in hint else OLTR_STYLE.normalize
    return Preset(OLTR_STYLE.image_size, OLTR_STYLE.augment, OLTR_STYLE.pad, normalize)


@DATASETS.register("oltr")
def oltr(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    if root is None or not root.is_dir():
        raise DataError(f"oltr: data root {root} is not a folder; {EXPECTED}")
    if not cfg.train_list or not cfg.eval_list:
        raise DataError(
            "oltr: set data.train_list and data.eval_list to list files under the data root, e.g. "
            'train_list = "ImageNet_LT_train.txt", eval_list = "ImageNet_LT_test.txt"; ' + EXPECTED
        )
    train_path, eval_path = root / cfg.train_list, root / cfg.eval_list
    train_rel, train_y = read_list(train_path)
    eval_rel, eval_y = read_list(eval_path)
    num_classes = cfg.num_classes or int(train_y.max()) + 1
    check_labels(train_path, train_y, num_classes)
    check_labels(eval_path, eval_y, num_classes)
    check_images_exist(root, train_path, train_rel)
    check_images_exist(root, eval_path, eval_rel)

    look = resolve_presentation(
        cfg, preset_for(root, cfg), channels=3, native_size=OLTR_STYLE.image_size or 224
    )
    size = look.image_size
    train_labels, eval_labels = torch.from_numpy(train_y), torch.from_numpy(eval_y)
    if cfg.in_memory == "yes":
        # Small lists (ImageNet-10-LT) can live on the device, at the evaluation geometry: training
        # then loses RandomResizedCrop and keeps only the batched flip.
        log.warning("oltr: in_memory = yes loads Resize+CenterCrop images; RandomResizedCrop is not applied")
        workers = max(1, cfg.num_workers)
        train = Split(
            train_labels,
            list(train_rel),
            images=decode_all([root / r for r in train_rel], lambda p: decode_eval(p, size), workers),
        )
        test = Split(
            eval_labels,
            list(eval_rel),
            images=decode_all([root / r for r in eval_rel], lambda p: decode_eval(p, size), workers),
        )
    else:
        train = Split(
            train_labels, list(train_rel), dataset=ListDataset(root, train_rel, train_y, size, True)
        )
        test = Split(eval_labels, list(eval_rel), dataset=ListDataset(root, eval_rel, eval_y, size, False))
    keys = [str(i) for i in range(num_classes)]
    return DataBundle(
        name="oltr",
        train=train,
        test=test,
        val=None,
        num_classes=num_classes,
        in_channels=3,
        image_size=size,
        class_names=keys,
        label_map=None,  # labels are used as they are (reference-spec.md §1.3): the identity, not worth a file
        mean=look.mean,
        std=look.std,
        augment=look.augment,
        pad=look.pad,
        train_counts=class_counts(train_labels, num_classes),
    )
