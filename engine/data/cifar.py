"""CIFAR-10 and CIFAR-100 from torchvision's on-disk python format, with the LT subsets of reference-spec.md §1.2.

The pickled batches are read directly (never torchvision's downloader: nothing here reaches the
network). The whole dataset is small, so it is held in memory as uint8 and resized once at load
when ``image_size`` differs from 32; only when the resized splits would not fit (224) do the
images stream, resized per sample from the 32x32 source.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.data import DATASETS
from engine.data.base import DataBundle, DataError
from engine.data.presets import (
    CIFAR_STYLE,
    Preset,
    array_bundle,
    longtail_subset,
    resolve_presentation,
    sort_class_names,
)
from engine.schema.config import DataConfig

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where torchvision's python-format CIFAR keeps its batches and labels."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    expected: str  # the exact on-disk format, for error messages


CIFAR10 = CifarLayout(
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    expected="expected CIFAR-10 in torchvision's python format: "
    "<root>/cifar-10-batches-py/data_batch_1..5, test_batch (pickled dicts with 'data' uint8 [N, 3072] "
    "and 'labels'), plus batches.meta",
)
CIFAR100 = CifarLayout(
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    expected="expected CIFAR-100 in torchvision's python format: "
    "<root>/cifar-100-python/train, test (pickled dicts with 'data' uint8 [N, 3072] and 'fine_labels'), "
    "plus meta",
)


def locate(root: Path | None, layout: CifarLayout) -> Path:
    """The batches folder: ``<root>/<folder>``, or ``root`` itself when it is that folder."""
    if root is None:
        raise DataError(
            f"{layout.title}: no data root is set (data.root, data_root in experiments.toml or "
            f"MDTUI_DATA_ROOT); {layout.expected}"
        )
    base = root if root.name == layout.folder else root / layout.folder
    missing = [
        base / name for name in (*layout.train_files, *layout.test_files) if not (base / name).is_file()
    ]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{layout.title} not found: missing {shown}; {layout.expected}")
    return base


# What a CIFAR batch pickle may reference: NumPy's array reconstruction and nothing else. Anything
# beyond (os.system, builtins.eval, ...) is a planted file, refused before it can run (issue 8).
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(path: Path, layout: CifarLayout) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            # latin1 as torchvision does: the batches are Python 2 pickles holding NumPy arrays.
            obj = _ArrayUnpickler(handle, encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means a file that is not a CIFAR batch
        raise DataError(f"{path}: not a readable CIFAR pickle ({exc}); {layout.expected}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, not a dict; {layout.expected}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 32, 32] (CHW: the rows are R, G, B planes) and int64 labels [n]."""
    batch = _unpickle(path, layout)
    if "data" not in batch or layout.label_key not in batch:
        raise DataError(
            f"{path}: keys {sorted(batch)} lack 'data' or '{layout.label_key}'; {layout.expected}"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[layout.label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise DataError(
            f"{path}: 'data' is {data.dtype} {list(data.shape)}, not uint8 [N, 3072]; {layout.expected}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images; {layout.expected}")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(
            f"{path}: labels must lie in 0..{layout.num_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def read_split(base: Path, names: tuple[str, ...], layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_batch(base / name, layout) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_class_names(base: Path, layout: CifarLayout) -> list[str]:
    """Names from the meta file; the label numbers when it is absent or unreadable."""
    fallback = [str(i) for i in range(layout.num_classes)]
    path = base / layout.meta_file
    if not path.is_file():
        return fallback
    try:
        names = _unpickle(path, layout).get(layout.names_key)
    except DataError:
        return fallback
    if not isinstance(names, list) or len(names) != layout.num_classes:
        return fallback
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def class_permutation(num_classes: int, class_order: str) -> np.ndarray:
    """new index of each original label: identity for ``numeric``; ``lexicographic`` reproduces the
    reference's folder export, where label folders "0".."99" sort as strings (reference-spec.md §1.1, §9.1)."""
    order = sort_class_names([str(i) for i in range(num_classes)], class_order, "cifar")
    permutation = np.empty(num_classes, dtype=np.int64)
    for new_index, key in enumerate(order):
        permutation[int(key)] = new_index
    return permutation


def build_cifar(cfg: DataConfig, root: Path | None, layout: CifarLayout, preset: Preset) -> DataBundle:
    base = locate(root, layout)
    train_x, train_y = read_split(base, layout.train_files, layout)
    test_x, test_y = read_split(base, layout.test_files, layout)
    train_ids = np.arange(len(train_y))
    keep = longtail_subset(train_y, layout.num_classes, cfg)
    if keep is not None:
        train_x, train_y, train_ids = train_x[keep], train_y[keep], train_ids[keep]

    permutation = class_permutation(layout.num_classes, cfg.class_order)
    train_y, test_y = permutation[train_y], permutation[test_y]
    names = read_class_names(base, layout)
    class_names = [""] * layout.num_classes
    for original, new_index in enumerate(permutation):
        class_names[new_index] = names[original]

    look = resolve_presentation(cfg, preset, channels=3, native_size=32)
    return array_bundle(
        layout.title.lower().replace("-", ""),
        (train_x, train_y, train_ids),
        (test_x, test_y),
        cfg=cfg,
        look=look,
        class_names=class_names,
        label_map={name: i for i, name in enumerate(class_names)},
    )


@DATASETS.register("cifar10")
def cifar10(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    return build_cifar(cfg, root, CIFAR10, CIFAR_STYLE)


@DATASETS.register("cifar100")
def cifar100(cfg: DataConfig, root: Path | None, seed: int) -> DataBundle:
    # reference-spec.md §1.4: the reference normalises CIFAR-100-LT with the CIFAR-10 constants and only the
    # balanced loader with CIFAR-100's own (its RandomRotation(15) is not reproduced: the batched
    # augmenter has no rotation).
    balanced = cfg.imbalance_ratio <= 1.0 or cfg.imbalance_profile == "none"
    preset = Preset(32, CIFAR_STYLE.augment, CIFAR_STYLE.pad, "cifar100" if balanced else "cifar10")
    return build_cifar(cfg, root, CIFAR100, preset)
