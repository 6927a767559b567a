"""Checkpoints: written atomically, read with ``weights_only=True`` only.

A checkpoint holds only tensors, plain containers, numbers and strings (the config as a JSON
string, RNG states as tensors), which is what lets ``torch.load(..., weights_only=True)`` read it
without unpickling arbitrary objects.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckpointError(Exception):
    """A checkpoint that is missing or unreadable (a user-facing message)."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to a temp file in the same directory, fsync, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # temp files left by a run killed mid-write (a run has one writer, so none is in use)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk or a vanished directory: the previous file stays
            reason = exc.strerror or exc
            raise CheckpointError(f"cannot write checkpoint {path}: {reason} (is the disk full?)") from exc
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which and why
        raise CheckpointError(f"checkpoint {path} cannot be read with weights_only=True: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a dict")
    return data


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of an engine checkpoint, or of a raw state dict (the reference's .pth)."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict):
        raise CheckpointError("checkpoint has no model state dict")
    # torch.compile prefixes parameter names with "_orig_mod."; accept both.
    return {k.removeprefix("_orig_mod."): v for k, v in state.items()}


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Initialise ``model`` from an upstream checkpoint (``from`` / ``init_checkpoint``)."""
    state = model_state(load_checkpoint(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({first}); was it trained with another model, "
            "dataset or number of classes?"
        ) from None


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Every global RNG a plugin may draw from, as weights_only-loadable values."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    np_state = np.random.get_state()
    state["numpy"] = {
        "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "pos": int(np_state[2]),
        "has_gauss": int(np_state[3]),
        "cached_gaussian": float(np_state[4]),
    }
    version, internal, gauss = random.getstate()
    state["python"] = {"version": int(version), "internal": list(internal), "gauss": gauss}
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``'s values; tensors loaded onto a GPU are brought back to the CPU, and a
    checkpoint from a machine with another number of visible GPUs restores the devices both have."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    if "numpy" in state:
        ns = state["numpy"]
        keys = ns["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, ns["pos"], ns["has_gauss"], ns["cached_gaussian"]))
    if "python" in state:
        ps = state["python"]
        random.setstate((ps["version"], tuple(ps["internal"]), ps["gauss"]))
