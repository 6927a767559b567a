"""Datasets, registered by name. Each module registers its builders in ``DATASETS`` on import."""

from __future__ import annotations

from engine.data.base import DataBundle, DataError, Split
from engine.registry import Registry

DATASETS: Registry = Registry("dataset")

# Builders register themselves; keep this list in step with engine.schema.config.DATASET_PARAMS.
from engine.data import cifar, folders, oltr, stl10  # noqa: E402,F401,I001  on-disk datasets
from engine.data import digits, synthetic  # noqa: E402,F401  embedded datasets

__all__ = ["DATASETS", "DataBundle", "DataError", "Split"]
