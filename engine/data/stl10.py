"""STL-10 from its binary distribution: ``<root>/stl10_binary/{train,test}_{X,y}.bin``.

Each image is 3 x 96 x 96 bytes, every channel stored column-major; labels are bytes 1..10. Labels
map to indices in numeric order (1 -> 0, ..., 10 -> 9). The reference trained on a PNG export whose
folders "1".."10" were sorted as strings, so there "10" had index 1 (reference-spec.md §1.1, §9.1);
``class_order = "lexicographic"`` reproduces that, and the bundle's label map records the order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.data import DATASETS
from engine.data.base import DataBundle, DataError
from engine.data.presets import (
    IMAGENET_STYLE,
    array_bundle,
    longtail_subset,
    resolve_presentation,
    sort_class_names,
)
from engine.schema.config import DataConfig

FOLDER = "stl10_binary"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
NUM_CLASSES = 10
EXPECTED = (
    "expected STL-10 in its binary format: <root>/stl10_binary/train_X.bin, train_y.bin, test_X.bin, "
    "test_y.bin (X: uint8 images of 3x96x96, each channel column-major; y: one byte per image, 1..10)"
)


def locate(root: Path | None) -> Path:
    if root is None:
        raise DataError(f"STL-10: no data root is set (data.root, data_root or MDTUI_DATA_ROOT); {EXPECTED}")
    base = root if root.name == FOLDER else root / FOLDER
    names = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
    missing = [str(base / n) for n in names if not (base / n).is_file()]
    if missing:
        raise DataError(f"STL-10 not found: missing {', '.join(missing)}; {EXPECTED}")
    return base


def read_split(base: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 96, 96] in CHW (rows first) and labels 1..10 [n]."""
    x_path, y_path = base / f"{split}_X.bin", base / f"{split}_y.bin"
    pixels = np.fromfile(x_path, dtype=np.uint8)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    if pixels.size % IMAGE_BYTES:
        raise DataError(f"{x_path}: {pixels.size} bytes is not a whole number of 3x96x96 images; {EXPECTED}")
    count = pixels.size // IMAGE_BYTES
    if labels.size != count:
        raise DataError(f"{y_path}: {labels.size} labels for {count} images in {x_path.name}; {EXPECTED}")
    if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise DataError(
            f"{y_path}: labels must lie in 1..10, found {labels.min()}..{labels.max()}; {EXPECTED}"
        )
    # Stored as [n, channel, column, row]: swap the last two axes to get rows first.
    images = pixels.reshape(count, 3, SIDE, SIDE).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(images), labels


def read_class_names(base: Path) -> list[str]:
    path = base / "class_names.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if len(names) == NUM_CLASSES:
            return names
    return [str(label) for label in range(1, NUM_CLASSES + 1)]


@DATASETS.register("stl10")
def stl10(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    base = locate(root)
    train_x, train_raw = read_split(base, "train")
    test_x, test_raw = read_split(base, "test")

    order = sort_class_names([str(label) for label in range(1, NUM_CLASSES + 1)], cfg.class_order, "stl10")
    index_of = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    for index, key in enumerate(order):
        index_of[int(key)] = index
    train_y, test_y = index_of[train_raw], index_of[test_raw]
    names = read_class_names(base)  # by original label 1..10
    class_names = [names[int(key) - 1] for key in order]

    train_ids = np.arange(len(train_y))
    keep = longtail_subset(train_y, NUM_CLASSES, cfg)
    if keep is not None:
        train_x, train_y, train_ids = train_x[keep], train_y[keep], train_ids[keep]

    look = resolve_presentation(cfg, IMAGENET_STYLE, channels=3, native_size=SIDE)
    return array_bundle(
        "stl10",
        (train_x, train_y, train_ids),
        (test_x, test_y),
        cfg=cfg,
        look=look,
        class_names=class_names,
        label_map={key: index for index, key in enumerate(order)},  # original STL label -> index
    )
