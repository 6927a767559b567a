"""One diagnosis pass shared by Model Doctor and the kernel pipeline: sift + per-class energies.

The pass streams a split once in eval mode. Every batch yields logits (for the sift) and per-sample
channel energies of the hooked layers; the energies of the samples the sift keeps are summed per
class into v[c, k]. Results are cached by (weights hash, settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.doctor import DiagnosisError
from engine.doctor.cache import DiagnosisCache, cache_key, file_digest, state_digest
from engine.doctor.masks import Phi, Scaling, Source, Wrt, class_energy, layer_energies
from engine.doctor.sift import SiftResult, sift_split
from engine.schema.config import SiftConfig, to_dict


def resolve_layers(model: nn.Module, keys: tuple[str, ...], where: str) -> dict[str, nn.Module]:
    """Dotted path -> module for each key, through the engine's layer addressing."""
    from engine.models import resolve_layer

    out: dict[str, nn.Module] = {}
    for i, key in enumerate(keys):
        try:
            path, module = resolve_layer(model, str(key))
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            raise DiagnosisError(f"{where}[{i}]: cannot address layer {key!r}: {exc}") from exc
        out[path] = module
    if not out:
        raise DiagnosisError(f"{where}: name at least one layer")
    return out


def weights_digest(init_checkpoint: str | None, model: nn.Module) -> str:
    """The checkpoint file's content hash, or the model state's when training from scratch."""
    if init_checkpoint and Path(init_checkpoint).is_file():
        return "file:" + file_digest(init_checkpoint)
    return "state:" + state_digest(model)


def split_ids(data: Any, split: str) -> list[str]:
    part = getattr(data, split, None)
    return list(part.ids) if part is not None else []


def diagnose(
    ctx: Any,
    layers: dict[str, nn.Module],
    *,
    sift: SiftConfig,
    source: Source,
    phi: Phi,
    scaling: Scaling,
    wrt: Wrt,
    cache_kind: str,
) -> tuple[SiftResult, dict[str, torch.Tensor], bool]:
    """(sift result, {layer path: v [C, K]}, cache hit) for the model in ``ctx``."""
    if sift.per_class < 1 or sift.batch_size < 1:
        raise DiagnosisError(
            f"sift.per_class ({sift.per_class}) and sift.batch_size ({sift.batch_size}) must be at least 1"
        )
    settings = {
        "model": to_dict(ctx.cfg.model),
        "data": to_dict(ctx.cfg.data),
        "layers": list(layers),
        "sift": to_dict(sift),
        "source": source,
        "phi": phi,
        "scaling": scaling,
        "wrt": wrt,
    }
    key = cache_key(weights_digest(ctx.cfg.init_checkpoint, ctx.model), settings)
    cache = DiagnosisCache(ctx.cache_dir, cache_kind)
    cached = cache.load(key)
    if cached is not None and all(f"energy:{name}" in cached for name in layers):
        result = SiftResult(
            index=torch.from_numpy(cached["sift_index"]),
            score=torch.from_numpy(cached["sift_score"]),
            payload=None,
        )
        energies = {name: torch.from_numpy(cached[f"energy:{name}"]) for name in layers}
        return result, energies, True

    sizes: dict[str, int] = {}

    def energy_fn(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, per_layer = layer_energies(
            ctx.model, layers, images, labels, source=source, phi=phi, scaling=scaling, wrt=wrt
        )
        sizes.update({name: int(e.shape[1]) for name, e in per_layer.items()})
        return logits, torch.cat([per_layer[name] for name in layers], dim=1)

    loader = ctx.make_loader(
        sift.split, batch_size=sift.batch_size, train_transform=sift.transform == "train", shuffle=False
    )
    result = sift_split(
        ctx.model,
        loader,
        num_classes=ctx.data.num_classes,
        per_class=sift.per_class,
        mode=sift.mode,
        energy_fn=energy_fn,
        device=ctx.device,
    )
    if result.payload is None:
        raise DiagnosisError(f"{sift.split} split is empty: nothing to diagnose")
    chunks = torch.split(result.payload, [sizes[name] for name in layers], dim=2)
    energies = {name: class_energy(chunk, result.valid) for name, chunk in zip(layers, chunks, strict=True)}
    result.payload = None  # the per-sample energies are not needed any more
    arrays: dict[str, np.ndarray] = {"sift_index": result.index.numpy(), "sift_score": result.score.numpy()}
    arrays.update({f"energy:{name}": v.numpy() for name, v in energies.items()})
    cache.save(key, arrays, {"settings": settings, "init_checkpoint": ctx.cfg.init_checkpoint})
    return result, energies, False
