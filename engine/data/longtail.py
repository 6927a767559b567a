"""Long-tailed subsets exactly as the reference builds them (reference-spec.md §1.2).

The LDAM-DRW construction: per-class counts from an exponential or step profile, and which images
are kept decided by NumPy's *legacy* global-seed shuffle, class after class in ascending label
order, so class i's subset depends on the RNG state left by classes 0..i-1. Using
``np.random.RandomState(seed)`` reproduces that stream without touching NumPy's global state.
"""

from __future__ import annotations

import numpy as np


def longtail_counts(
    n_max: int, num_classes: int, ratio: float, profile: str = "exp", reverse: bool = False
) -> list[int]:
    """Images kept per class: n_i = floor(n_max * (1/ratio)^(i/(C-1))) for the exp profile."""
    if ratio <= 1.0 or profile == "none" or num_classes < 2:
        return [int(n_max)] * num_classes
    f = 1.0 / ratio
    if profile == "exp":
        counts = []
        for i in range(num_classes):
            exponent = (num_classes - 1 - i) if reverse else i
            counts.append(int(n_max * f ** (exponent / (num_classes - 1.0))))
        return counts
    if profile == "step":
        half = num_classes // 2
        counts = [int(n_max)] * half + [int(n_max * f)] * (num_classes - half)
        return counts[::-1] if reverse else counts
    raise ValueError(f"unknown imbalance profile {profile!r} (exp, step or none)")


def longtail_indices(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """Indices of the kept samples, grouped by class in ascending label order (as the reference)."""
    rng = np.random.RandomState(seed)
    labels = np.asarray(labels)
    kept = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        rng.shuffle(idx)
        kept.append(idx[:n])
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
