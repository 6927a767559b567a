"""Diagnosis artifacts: energy matrices and masks (.npy), heat maps (.png), sifted image lists (.json).

Every file written is announced with an ``artifact`` event, whose summary says whether the statistics
came from the test split (leaky).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.doctor.sift import SiftResult

Emit = Callable[..., None]


def slug(layer: str) -> str:
    """A file-name-safe form of a layer path ("layer3.4.conv2" stays, "-1" becomes "key_-1")."""
    text = re.sub(r"[^A-Za-z0-9._-]", "_", layer)
    return f"key_{text}" if text[:1] in ("-", ".", "") else text


def write_array(path: Path, array: np.ndarray, emit: Emit, kind: str, summary: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    emit("artifact", kind=kind, path=str(path), summary={**summary, "shape": list(array.shape)})
    return path


def write_heatmap(
    path: Path,
    matrix: np.ndarray,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    emit: Emit,
    summary: dict[str, Any],
) -> Path:
    """A rows-by-columns heat map; wide enough that a 2048-channel layer stays readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(min(4 + cols / 16, 40), min(2 + rows / 3, 20)))
    image = ax.imshow(matrix.astype(float), aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    emit("artifact", kind="plot", path=str(path), summary=summary)
    return path


def write_sift_list(
    path: Path,
    result: SiftResult,
    *,
    ids: list[str],
    class_names: list[str],
    split: str,
    mode: str,
    emit: Emit,
    leaky: bool,
) -> Path:
    """Per class, the kept samples (index into the split, stable id, score) in order of preference."""
    classes = []
    for c in range(result.index.shape[0]):
        kept = [
            {"index": int(i), "id": ids[int(i)], "score": round(float(s), 6)}
            for i, s in zip(result.index[c].tolist(), result.score[c].tolist(), strict=True)
            if i >= 0
        ]
        name = class_names[c] if c < len(class_names) else str(c)
        classes.append({"class": c, "name": name, "images": kept})
    payload = {
        "split": split,
        "mode": mode,
        "per_class": int(result.index.shape[1]),
        "leaky": leaky,
        "classes": classes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    counts = result.counts.tolist()
    emit(
        "artifact",
        kind="image_list",
        path=str(path),
        summary={
            "split": split,
            "mode": mode,
            "images": int(sum(counts)),
            "min_per_class": int(min(counts)),
            "leaky": leaky,
        },
    )
    return path
