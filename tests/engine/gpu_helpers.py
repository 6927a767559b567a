"""Running one engine test on the CPU and, where a CUDA device exists, again on it (a ``gpu`` twin).

Engine tests pin ``device = "cpu"``: with ``auto`` a GPU host would train them on CUDA and compare
its tensors with CPU ones. The twin repeats the same assertions on CUDA with ``deterministic = true``
(cuDNN autotuning and atomics-based kernels would otherwise break bit-identical comparisons).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

# parametrize("device", DEVICES): "cpu" everywhere, "cuda" as a gpu-marked twin
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])]


def on(device: str) -> dict[str, Any]:
    """The config overrides that run a tiny engine test on ``device``."""
    return {"device": device, "deterministic": device == "cuda"}
