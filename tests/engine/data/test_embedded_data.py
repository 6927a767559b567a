"""The embedded datasets (digits, synthetic) and build_data's val split and data root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.data.build import build_data, data_root
from engine.data.longtail import longtail_counts
from engine.schema.validate import from_dict


def data(**block):
    return build_data(from_dict({"data": block}))


def test_digits_split_and_shape():
    b = data(name="digits")
    assert len(b.train) + len(b.test) == 1797
    assert b.in_channels == 1 and b.image_size == 32 and b.num_classes == 10
    assert b.train.images.dtype == torch.uint8 and b.train.images.shape[1:] == (1, 32, 32)
    test_counts = torch.bincount(b.test.labels, minlength=10)
    assert int(test_counts.min()) >= 43 and int(test_counts.max()) <= 46  # stratified 25%
    assert set(b.train.ids).isdisjoint(b.test.ids)
    assert b.augment == "crop" and b.pad == 2
    assert b.train_counts == torch.bincount(b.train.labels, minlength=10).tolist()


def test_digits_longtail_profile_is_exact_and_seeded():
    b = data(name="digits", imbalance_ratio=10)
    n_max = b.train_counts[0]
    assert b.train_counts == longtail_counts(n_max, 10, 10.0)
    assert b.train_counts[0] / b.train_counts[-1] == pytest.approx(10, rel=0.1)
    again = data(name="digits", imbalance_ratio=10)
    assert again.train.ids == b.train.ids
    other = data(name="digits", imbalance_ratio=10, subset_seed=1)
    assert other.train.ids != b.train.ids
    small = data(name="digits", image_size=16)
    assert small.train.images.shape[-1] == 16


def test_synthetic_sizes_counts_and_determinism():
    spec = {
        "name": "synthetic",
        "num_classes": 5,
        "samples_per_class": 30,
        "test_per_class": 4,
        "image_size": 12,
        "channels": 2,
        "imbalance_ratio": 3,
    }
    b = data(**spec)
    assert (
        b.train_counts == longtail_counts(30, 5, 3.0) and b.train_counts[0] == 30 and b.train_counts[-1] == 10
    )
    assert b.train.images.shape[1:] == (2, 12, 12) and len(b.test) == 20
    assert len(b.mean) == 2 and all(s > 0 for s in b.std)
    again = data(**spec)  # the same spec again: the same images
    assert torch.equal(again.train.images, b.train.images)
    # classes differ: class means of the images are far apart compared with noise
    means = torch.stack([b.train.images[b.train.labels == c].float().mean(0) for c in range(5)])
    assert float((means[0] - means[1]).abs().mean()) > 5


def test_val_fraction_is_stratified_and_disjoint():
    b = data(name="synthetic", num_classes=4, samples_per_class=20, val_fraction=0.25)
    assert b.val is not None and len(b.val) == 20
    assert torch.bincount(b.val.labels).tolist() == [5, 5, 5, 5]
    assert b.train_counts == [15, 15, 15, 15]
    assert set(b.val.ids).isdisjoint(b.train.ids)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MDTUI_DATA_ROOT", str(tmp_path))
    assert data_root(from_dict({}).data) == tmp_path.resolve()
    assert data_root(from_dict({"data": {"root": "/somewhere"}}).data) == Path("/somewhere")
    monkeypatch.delenv("MDTUI_DATA_ROOT")
    assert data_root(from_dict({}).data) is None
