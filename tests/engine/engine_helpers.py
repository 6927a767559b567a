"""Tiny engine configurations that train in about a second on 2 CPU cores."""

from __future__ import annotations

from typing import Any

import torch

from engine.schema.config import EngineConfig
from engine.schema.validate import from_dict

# Tiny models gain nothing from a second thread, and OpenMP threads spinning against other busy
# processes (parallel test runs on 2 cores) slow these runs down twenty-fold.
torch.set_num_threads(1)

TINY_DATA = {
    "name": "synthetic",
    "num_classes": 3,
    "samples_per_class": 16,
    "test_per_class": 6,
    "image_size": 8,
    "num_workers": 0,
}


def tiny_config(**overrides: Any) -> EngineConfig:
    raw: dict[str, Any] = {
        "run_id": "tiny",
        "epochs": 3,
        "batch_size": 16,
        "eval_batch_size": 64,
        "model": "resnet32",
        "data": dict(TINY_DATA),
        "optim": {"name": "sgd", "lr": 0.05},
        "schedule": {"name": "cosine"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return from_dict(raw)
