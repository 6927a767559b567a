"""Diagnosis cache: statistics keyed by (checkpoint content hash, diagnosis settings).

Sibling runs that treat the same checkpoint with the same diagnosis settings (a sweep over λ or lr)
diagnose once; the others load the arrays. Writes are atomic (temp file + os.replace), so two runs
finishing a diagnosis at once leave one intact entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_digest(model: nn.Module) -> str:
    """Content hash of a model's parameters and buffers (when there is no checkpoint file)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(weights_digest: str, settings: dict[str, Any]) -> str:
    return hashlib.sha256(f"{weights_digest}:{settings_digest(settings)}".encode()).hexdigest()[:32]


class DiagnosisCache:
    """One ``<key>.npz`` (+ ``<key>.json`` describing it) per entry under ``root/<kind>/``."""

    def __init__(self, root: str | Path, kind: str) -> None:
        self.dir = Path(root) / kind

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed and overwritten

    def save(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(
            self.dir / f"{key}.json", lambda h: h.write(json.dumps(meta, indent=2, default=str).encode())
        )
        target = self.path(key)
        _atomic_write(target, lambda h: np.savez(h, **arrays))
        return target


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
