"""On-disk datasets: miniature copies in the exact formats (CIFAR pickles, STL-10 binaries, image
folders, masks, OLTR list files) built in tmp_path."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import DATASETS, DataError
from engine.data import presets as presets_module
from engine.data.longtail import longtail_counts
from engine.data.oltr import ListDataset, center_box
from engine.data.presets import NORMALIZATION, resize_uint8
from engine.schema.config import DATASET_PARAMS, DataConfig

# --------------------------------------------------------------------------- helpers


def build(name: str, root: Path | None, **data) -> object:
    return DATASETS.get(name)(DataConfig(name=name, **data), root, 0)


def cifar_pixels(original_index: int) -> np.ndarray:
    """A distinct, position-dependent row of 3072 bytes (R plane, G plane, B plane; row-major)."""
    return ((np.arange(3072) * 7 + original_index) % 256).astype(np.uint8)


def expected_chw(original_index: int) -> torch.Tensor:
    return torch.from_numpy(cifar_pixels(original_index).reshape(3, 32, 32))


def write_pickle(path: Path, obj: dict, byte_keys: bool) -> None:
    if byte_keys:  # what a Python 2 pickle of the real files holds
        obj = {k.encode(): v for k, v in obj.items()}
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar_labels(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def write_cifar10(root: Path, per_class: int = 20, test_per_class: int = 2) -> np.ndarray:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    labels = cifar_labels(10, per_class, seed=123)
    data = np.stack([cifar_pixels(i) for i in range(len(labels))])
    for b, chunk in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
        write_pickle(
            base / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": labels[chunk].tolist(),
                "data": data[chunk],
                "filenames": [f"{i}.png" for i in chunk],
            },
            byte_keys=True,
        )
    test_labels = cifar_labels(10, test_per_class, seed=7)
    test_data = np.stack([cifar_pixels(1000 + i) for i in range(len(test_labels))])
    write_pickle(base / "test_batch", {"labels": test_labels.tolist(), "data": test_data}, byte_keys=False)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_pickle(base / "batches.meta", {"label_names": names, "num_vis": 3072}, byte_keys=True)
    return labels


def write_cifar100(root: Path, per_class: int = 5) -> np.ndarray:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    labels = cifar_labels(100, per_class, seed=5)
    data = np.stack([cifar_pixels(i) for i in range(len(labels))])
    write_pickle(
        base / "train",
        {"fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": data},
        byte_keys=True,
    )
    test = np.arange(100)
    write_pickle(
        base / "test",
        {"fine_labels": test.tolist(), "data": np.stack([cifar_pixels(i) for i in test])},
        byte_keys=True,
    )
    write_pickle(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]}, byte_keys=True)
    return labels


def reference_lt_indices(labels: np.ndarray, counts: list[int]) -> list[int]:
    """LDAM-DRW's construction written independently: the *global* legacy RNG, seed 0, class order."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        kept: list[int] = []
        for c in np.unique(labels):
            idx = np.where(labels == c)[0]
            np.random.shuffle(idx)
            kept.extend(idx[: counts[c]].tolist())
        return kept
    finally:
        np.random.set_state(state)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def solid(value_r: int, value_g: int, side: int = 8) -> np.ndarray:
    image = np.zeros((side, side, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = value_r, value_g, 77
    return image


def write_folders(root: Path, classes: list[str], train_per_class: int = 3, test_per_class: int = 1) -> None:
    for c, name in enumerate(classes):
        for k in range(train_per_class):
            save_png(root / "train" / name / f"img_{c}_{k}.png", solid(c * 10, k))
        for k in range(test_per_class):
            save_png(root / "test" / name / f"t_{c}_{k}.png", solid(c * 10, 100 + k))


# --------------------------------------------------------------------------- registry and pure counts


def test_every_on_disk_dataset_is_registered_and_named_in_the_config() -> None:
    for name in ("cifar10", "cifar100", "stl10", "image_folder", "image_mask", "oltr"):
        assert name in DATASETS
        assert name in DATASET_PARAMS


@pytest.mark.parametrize(
    ("n_max", "classes", "ratio", "total", "head", "tail"),
    [
        (5000, 10, 100, 12406, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], None),
        (5000, 10, 50, 13996, [5000, 3237, 2096, 1357, 878], [238, 154, 100]),
        (5000, 10, 10, 20431, [5000, 3871, 2997, 2320, 1796], [834, 645, 500]),
        (500, 100, 100, 10847, [500, 477, 455, 434, 415], [5, 5, 5]),
        (500, 100, 50, 12608, [500, 480, 462], [10, 10]),
        (500, 100, 10, 19573, [500, 488, 477], [51, 50]),
    ],
)
def test_longtail_counts_match_the_reference_tables(n_max, classes, ratio, total, head, tail) -> None:
    # n_max as the reference computes it: len(train) / C, a float
    counts = longtail_counts(n_max * classes / classes, classes, ratio, "exp", False)
    assert sum(counts) == total
    assert counts[: len(head)] == head
    if tail:
        assert counts[-len(tail) :] == tail


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_reads_torchvision_pickles_in_chw_order(tmp_path: Path) -> None:
    labels = write_cifar10(tmp_path)
    bundle = build("cifar10", tmp_path)
    assert bundle.name == "cifar10" and bundle.num_classes == 10 and bundle.in_channels == 3
    assert bundle.train.images.shape == (200, 3, 32, 32) and bundle.train.images.dtype == torch.uint8
    assert bundle.test.images.shape == (20, 3, 32, 32)
    assert torch.equal(bundle.train.labels, torch.from_numpy(labels))
    assert torch.equal(bundle.train.images[17], expected_chw(17))
    assert torch.equal(bundle.test.images[3], expected_chw(1003))
    assert bundle.train.ids[17] == "train/17"
    assert bundle.class_names[0] == "airplane" and bundle.label_map["truck"] == 9
    assert bundle.train_counts == [20] * 10
    assert (bundle.augment, bundle.pad, bundle.image_size) == ("crop_flip", 4, 32)
    assert bundle.mean == NORMALIZATION["cifar10"][0] and bundle.std == NORMALIZATION["cifar10"][1]


def test_cifar10_lt_keeps_the_reference_profile_and_seed0_shuffled_indices(tmp_path: Path) -> None:
    labels = write_cifar10(tmp_path)
    counts = longtail_counts(20.0, 10, 10.0)
    assert counts == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    bundle = build("cifar10", tmp_path, imbalance_ratio=10.0)
    assert bundle.train_counts == counts
    kept = reference_lt_indices(labels, counts)
    assert bundle.train.ids == [f"train/{i}" for i in kept]
    assert torch.equal(bundle.train.labels, torch.from_numpy(labels[kept]))
    for row, original in enumerate(kept):
        assert torch.equal(bundle.train.images[row], expected_chw(original))
    assert len(bundle.test) == 20  # the test set stays balanced


def test_cifar10_lt_reverse_step_and_subset_seed(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    assert build("cifar10", tmp_path, imbalance_ratio=10.0, imbalance_reverse=True).train_counts == (
        [2, 2, 3, 4, 5, 7, 9, 11, 15, 20]
    )
    assert (
        build("cifar10", tmp_path, imbalance_ratio=10.0, imbalance_profile="step").train_counts
        == [20] * 5 + [2] * 5
    )
    a = build("cifar10", tmp_path, imbalance_ratio=10.0)
    b = build("cifar10", tmp_path, imbalance_ratio=10.0, subset_seed=1)
    assert a.train_counts == b.train_counts and a.train.ids != b.train.ids


def test_cifar10_resizes_once_and_streams_when_asked(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    big = build("cifar10", tmp_path, image_size=64)
    assert big.image_size == 64 and big.train.images.shape == (200, 3, 64, 64)
    streamed = build("cifar10", tmp_path, image_size=64, in_memory="no")
    assert streamed.train.images is None and len(streamed.train.dataset) == 200
    image, label = streamed.train.dataset[5]
    assert image.dtype == torch.uint8 and torch.equal(image, big.train.images[5])
    assert label == int(big.train.labels[5])


def test_resize_is_antialiased_bilinear() -> None:
    flat = torch.full((2, 3, 32, 32), 123, dtype=torch.uint8)
    assert torch.equal(resize_uint8(flat, 64), torch.full((2, 3, 64, 64), 123, dtype=torch.uint8))
    grid = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    grid[..., ::4, ::4] = 255  # plain bilinear at 1/4 samples between the grid lines and sees only 0
    down = resize_uint8(grid, 8)
    assert int(down.min()) >= 8 and int(down.max()) <= 40  # antialiasing spreads the dots evenly


def test_resize_matches_pil_bilinear_within_one_level() -> None:
    array = np.random.RandomState(0).randint(0, 256, (40, 40, 3)).astype(np.uint8)
    for size in (16, 96):
        pil = np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR)).astype(int)
        ours = resize_uint8(torch.from_numpy(array).permute(2, 0, 1)[None].contiguous(), size)
        assert np.abs(ours[0].permute(1, 2, 0).numpy().astype(int) - pil).max() <= 1


def test_cifar100_normalisation_and_lexicographic_order(tmp_path: Path) -> None:
    labels = write_cifar100(tmp_path)
    balanced = build("cifar100", tmp_path)
    assert balanced.num_classes == 100 and balanced.train.images.shape == (500, 3, 32, 32)
    assert balanced.mean == NORMALIZATION["cifar100"][0]
    lt = build("cifar100", tmp_path, imbalance_ratio=2.0)
    assert (
        lt.mean == NORMALIZATION["cifar10"][0]
    )  # reference-spec.md §1.4: CIFAR-100-LT uses the CIFAR-10 constants
    assert lt.train_counts == longtail_counts(5.0, 100, 2.0)
    lex = build("cifar100", tmp_path, class_order="lexicographic")
    assert lex.class_names[:3] == ["c0", "c1", "c10"] and lex.label_map["c2"] == 12
    assert int(lex.train.labels[int(np.where(labels == 10)[0][0])]) == 2
    assert int(lex.test.labels[10]) == 2


def test_cifar_missing_and_malformed_data_name_the_path_and_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_1.*torchvision's python format"):
        build("cifar10", tmp_path)
    with pytest.raises(DataError, match=r"cifar-100-python/train.*fine_labels"):
        build("cifar100", tmp_path)
    with pytest.raises(DataError, match="no data root"):
        build("cifar10", None)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"data_batch_3: not a readable CIFAR pickle"):
        build("cifar10", tmp_path)
    write_pickle(
        tmp_path / "cifar-10-batches-py" / "data_batch_3",
        {"labels": [0, 1], "data": np.zeros((2, 100), np.uint8)},
        byte_keys=True,
    )
    with pytest.raises(DataError, match=r"data_batch_3: 'data' is uint8 \[2, 100\], not uint8 \[N, 3072\]"):
        build("cifar10", tmp_path)


# --------------------------------------------------------------------------- STL-10


def write_stl10(
    root: Path, train_per_class: int = 2, test_per_class: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    rng = np.random.RandomState(0)
    out = []
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(1, 11), per)).astype(np.uint8)
        images = rng.randint(0, 256, size=(len(labels), 3, 96, 96)).astype(np.uint8)  # CHW, rows first
        images.transpose(0, 1, 3, 2).tofile(base / f"{split}_X.bin")  # the format stores columns first
        labels.tofile(base / f"{split}_y.bin")
        out.append((images, labels))
    (base / "class_names.txt").write_text("\n".join(f"name{i}" for i in range(1, 11)) + "\n")
    return out[0]


def test_stl10_reads_column_major_binaries_and_maps_labels_numerically(tmp_path: Path) -> None:
    images, labels = write_stl10(tmp_path)
    bundle = build("stl10", tmp_path, image_size=96)
    assert bundle.train.images.shape == (20, 3, 96, 96) and len(bundle.test) == 10
    assert torch.equal(bundle.train.images, torch.from_numpy(images))
    assert torch.equal(bundle.train.labels, torch.from_numpy(labels.astype(np.int64) - 1))
    assert bundle.label_map["10"] == 9 and bundle.class_names[9] == "name10"
    assert (bundle.augment, bundle.mean) == ("flip_vflip", NORMALIZATION["imagenet"][0])
    default = build("stl10", tmp_path)
    assert default.image_size == 224 and default.train.images.shape == (20, 3, 224, 224)


def test_stl10_lexicographic_order_reproduces_the_reference_quirk(tmp_path: Path) -> None:
    _images, labels = write_stl10(tmp_path)
    bundle = build("stl10", tmp_path, image_size=32, class_order="lexicographic")
    assert bundle.label_map["10"] == 1 and bundle.label_map["2"] == 2 and bundle.label_map["9"] == 9
    first_ten = int(np.where(labels == 10)[0][0])
    assert int(bundle.train.labels[first_ten]) == 1 and bundle.class_names[1] == "name10"


def test_stl10_missing_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"stl10_binary/train_X.bin.*binary format"):
        build("stl10", tmp_path)
    write_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "train_X.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train_X.bin: .* not a whole number of 3x96x96 images"):
        build("stl10", tmp_path)


# --------------------------------------------------------------------------- image folders


def test_folders_numeric_versus_lexicographic_on_0_to_11(tmp_path: Path) -> None:
    classes = [str(i) for i in range(12)]
    write_folders(tmp_path, classes)
    numeric = build("image_folder", tmp_path)
    assert numeric.class_names == classes and numeric.label_map["10"] == 10
    assert numeric.train.images.shape == (36, 3, 8, 8) and len(numeric.test) == 12
    lex = build("image_folder", tmp_path, class_order="lexicographic")
    assert (
        lex.class_names[:4] == ["0", "1", "10", "11"] and lex.label_map["10"] == 2 and lex.label_map["2"] == 4
    )
    for bundle in (numeric, lex):
        for row, ident in enumerate(bundle.train.ids):
            folder = ident.split("/")[1]
            assert int(bundle.train.labels[row]) == bundle.label_map[folder]
            assert int(bundle.train.images[row, 0, 0, 0]) == int(folder) * 10  # image i is the file of id i
    assert numeric.train.ids[0] == "train/0/img_0_0.png"
    assert (numeric.augment, numeric.pad, numeric.mean) == ("crop_flip", 4, NORMALIZATION["cifar10"][0])


def test_folders_with_names_need_an_explicit_order(tmp_path: Path) -> None:
    write_folders(tmp_path, ["dog", "cat", "bird"])
    with pytest.raises(DataError, match=r"class_order = \"lexicographic\""):
        build("image_folder", tmp_path)
    bundle = build("image_folder", tmp_path, class_order="lexicographic", image_size=96)
    assert bundle.label_map == {"bird": 0, "cat": 1, "dog": 2}
    assert bundle.train.images.shape == (9, 3, 96, 96)
    assert (bundle.augment, bundle.mean) == ("flip_vflip", NORMALIZATION["imagenet"][0])


def test_folders_stream_above_the_memory_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folders(tmp_path, ["0", "1"])
    in_memory = build("image_folder", tmp_path)
    monkeypatch.setattr(presets_module, "IN_MEMORY_MAX_BYTES", 100)
    streamed = build("image_folder", tmp_path)
    assert streamed.train.images is None and streamed.test.dataset is not None
    for i in range(len(streamed.train)):
        image, label = streamed.train.dataset[i]
        assert torch.equal(image, in_memory.train.images[i]) and label == int(in_memory.train.labels[i])
    assert build("image_folder", tmp_path, in_memory="yes").train.images is not None


def test_folders_longtail_subset(tmp_path: Path) -> None:
    write_folders(tmp_path, [str(i) for i in range(4)], train_per_class=6)
    bundle = build("image_folder", tmp_path, imbalance_ratio=6.0)
    assert bundle.train_counts == longtail_counts(6.0, 4, 6.0) == [6, 3, 1, 1]
    assert len(bundle.train.images) == 11


def test_folders_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train is not a folder.*<root>/<train_dir>/<class>/<image>"):
        build("image_folder", tmp_path)
    write_folders(tmp_path, ["0", "1"])
    (tmp_path / "test" / "7").mkdir()
    with pytest.raises(DataError, match=r"class folders \['7'\] that the training folder lacks"):
        build("image_folder", tmp_path)
    (tmp_path / "test" / "7").rmdir()
    (tmp_path / "train" / "1" / "img_1_0.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"img_1_0.png: not a readable image"):
        build("image_folder", tmp_path)


# --------------------------------------------------------------------------- image + mask


def write_masks(root: Path) -> None:
    write_folders(root, ["0", "1"])
    save_png(root / "train" / "1" / "photo.jpg", solid(10, 50))  # mask name: basename with .png
    for c in range(2):
        for k in range(3):
            if (c, k) != (1, 2):  # one image without a mask
                Image.fromarray(np.full((8, 8), 40 * c + k, np.uint8)).save(_mask(root, f"img_{c}_{k}.png"))
    Image.fromarray(np.full((8, 8), 222, np.uint8)).save(_mask(root, "photo.png"))


def _mask(root: Path, name: str) -> Path:
    (root / "masks").mkdir(exist_ok=True)
    return root / "masks" / name


def test_image_mask_aligns_masks_and_counts_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_masks(tmp_path)
    with caplog.at_level(logging.WARNING):
        bundle = build("image_mask", tmp_path, mask_dir="masks")
    assert "1 of 7 training images have no mask" in caplog.text
    masks = bundle.train.masks
    assert masks.shape == (7, 1, 8, 8) and masks.dtype == torch.uint8 and bundle.test.masks is None
    expected = {
        "train/0/img_0_0.png": 0,
        "train/0/img_0_2.png": 2,
        "train/1/img_1_1.png": 41,
        "train/1/img_1_2.png": 255,
        "train/1/photo.jpg": 222,
    }
    for ident, value in expected.items():
        assert int(masks[bundle.train.ids.index(ident)].float().mean()) == value

    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "MASK.png")
    fallback = build("image_mask", tmp_path, mask_dir="masks", default_mask="MASK.png")
    assert int(fallback.train.masks[fallback.train.ids.index("train/1/img_1_2.png")].max()) == 9

    streamed = build("image_mask", tmp_path, mask_dir="masks", in_memory="no", image_size=16)
    image, label, mask = streamed.train.dataset[bundle.train.ids.index("train/1/photo.jpg")]
    assert image.shape == (3, 16, 16) and label == 1 and mask.shape == (1, 16, 16) and int(mask.min()) == 222
    assert len(streamed.test.dataset[0]) == 2
    assert build("image_folder", tmp_path, mask_dir="masks").train.masks is not None


def test_image_mask_errors(tmp_path: Path) -> None:
    write_masks(tmp_path)
    with pytest.raises(DataError, match="data.mask_dir is not set"):
        build("image_mask", tmp_path)
    with pytest.raises(DataError, match=r"mask folder .*nomasks does not exist.*8-bit grey PNGs"):
        build("image_mask", tmp_path, mask_dir="nomasks")
    with pytest.raises(DataError, match=r"default_mask .*MISSING.png does not exist"):
        build("image_mask", tmp_path, mask_dir="masks", default_mask="MISSING.png")


# --------------------------------------------------------------------------- OLTR list files


def write_oltr(root: Path, classes: int = 3, name: str = "ImageNet_LT") -> Path:
    base = root / name
    lines_train, lines_eval = [], []
    for c in range(classes):
        for k in range(c + 2):
            rel = f"train/n{c:03d}/img_{k}.png"
            save_png(base / rel, np.full((20, 30, 3), 10 * c, np.uint8))
            lines_train.append(f"{rel} {c}")
        rel = f"val/n{c:03d}/v.png"
        save_png(base / rel, np.full((30, 20, 3), 10 * c, np.uint8))
        lines_eval.append(f"{rel} {c}")
    (base / "train.txt").write_text("\n".join(lines_train) + "\n")
    (base / "test.txt").write_text("\n".join(lines_eval) + "\n")
    return base


def test_oltr_streams_list_files(tmp_path: Path) -> None:
    base = write_oltr(tmp_path)
    bundle = build("oltr", base, train_list="train.txt", eval_list="test.txt", num_classes=3, image_size=16)
    assert bundle.num_classes == 3 and bundle.train_counts == [2, 3, 4] and len(bundle.test) == 3
    assert bundle.train.images is None and isinstance(bundle.train.dataset, ListDataset)
    assert bundle.train.ids[0] == "train/n000/img_0.png"
    image, label = bundle.train.dataset[8]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == 2 and int(image.max()) == 20
    image, label = bundle.test.dataset[1]
    assert image.shape == (3, 16, 16) and label == 1
    assert (bundle.augment, bundle.mean) == ("flip", NORMALIZATION["imagenet"][0])
    in_memory = build(
        "oltr", base, train_list="train.txt", eval_list="test.txt", image_size=16, in_memory="yes"
    )
    assert in_memory.train.images.shape == (9, 3, 16, 16) and in_memory.num_classes == 3


def test_oltr_inat_constants_and_center_crop_geometry(tmp_path: Path) -> None:
    base = write_oltr(tmp_path, name="iNaturalist2018")
    bundle = build("oltr", base, train_list="train.txt", eval_list="test.txt", image_size=16)
    assert bundle.mean == NORMALIZATION["inat"][0]
    assert center_box(500, 375, 224) == ((341, 256), (58, 16, 282, 240))


def test_oltr_errors(tmp_path: Path) -> None:
    base = write_oltr(tmp_path)
    with pytest.raises(DataError, match="set data.train_list and data.eval_list"):
        build("oltr", base)
    with pytest.raises(DataError, match=r"nope.txt does not exist.*<relative image path> <integer label>"):
        build("oltr", base, train_list="nope.txt", eval_list="test.txt")
    with pytest.raises(DataError, match=r"3 distinct labels, expected exactly 4"):
        build("oltr", base, train_list="train.txt", eval_list="test.txt", num_classes=4)
    with pytest.raises(DataError, match=r"labels must lie in 0..1"):
        build("oltr", base, train_list="train.txt", eval_list="test.txt", num_classes=2)
    (base / "bad.txt").write_text("train/n000/img_0.png 0\ntrain/n000/img_1.png zero\n")
    with pytest.raises(DataError, match=r"bad.txt:2: 'train/n000/img_1.png zero' is not"):
        build("oltr", base, train_list="bad.txt", eval_list="test.txt")
    (base / "gone.txt").write_text("train/n000/img_0.png 0\ntrain/n002/img_0.png 2\nmissing/x.png 1\n")
    with pytest.raises(DataError, match=r"missing/x.png does not exist"):
        build("oltr", base, train_list="gone.txt", eval_list="test.txt")


# --------------------------------------------------------------------------- through the batch loader


@pytest.mark.parametrize("in_memory", ["yes", "no"])
def test_masked_folders_feed_the_batch_loader(tmp_path: Path, in_memory: str) -> None:
    from engine.data.loader import Placement, make_loader

    write_masks(tmp_path)
    bundle = build("image_mask", tmp_path, mask_dir="masks", in_memory=in_memory)
    loader = make_loader(
        bundle,
        "train",
        batch_size=4,
        train_transform=True,
        shuffle=True,
        placement=Placement("cpu", num_workers=0),
        generator=torch.Generator().manual_seed(0),
    )
    batches = list(loader)
    assert sum(len(b) for b in batches) == 7
    for batch in batches:
        assert batch.images.shape[1:] == (3, 8, 8) and batch.images.dtype == torch.float32
        assert batch.masks is not None and batch.masks.shape == (len(batch), 1, 8, 8)
        assert float(batch.masks.min()) >= 0.0 and float(batch.masks.max()) <= 1.0


def test_streamed_test_geometry_on_the_train_split_is_deterministic(tmp_path: Path) -> None:
    """Image sift runs the train split with test-time geometry: no RandomResizedCrop there."""
    from engine.data.loader import Placement, geometry_for, make_loader

    base = write_oltr(tmp_path)
    bundle = build("oltr", base, train_list="train.txt", eval_list="test.txt", num_classes=3, image_size=16)
    dataset = bundle.train.dataset
    assert dataset.random_resized_crop and not geometry_for(dataset, False).random_resized_crop
    subset = torch.utils.data.Subset(dataset, [0, 1])
    assert not geometry_for(subset, False).dataset.random_resized_crop
    passes = [
        torch.cat(
            [
                b.images
                for b in make_loader(
                    bundle,
                    bundle.train,
                    batch_size=4,
                    train_transform=False,
                    shuffle=False,
                    placement=Placement("cpu", num_workers=0),
                )
            ]
        )
        for _ in range(2)
    ]
    assert torch.equal(passes[0], passes[1])
