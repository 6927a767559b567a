"""``build_data(cfg)``: resolve the data root, call the registered builder, hold out a val split."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.data import DATASETS
from engine.data.augment import resolve_rotation
from engine.data.base import DataBundle, DataError, Split
from engine.data.presets import Preset, class_counts, resolve_presentation
from engine.schema.config import DataConfig, EngineConfig, resolve_data_root
from engine.schema.validate import require_block_in_range


def data_root(cfg: DataConfig) -> Path | None:
    """Where the dataset lives (``engine.schema.config.resolve_data_root``: the manager has already
    made ``data.root`` absolute; a config run by hand resolves against the working directory)."""
    root = resolve_data_root(cfg.root, Path.cwd())
    return root.resolve() if root is not None else None


def build_data(cfg: EngineConfig) -> DataBundle:
    require_block_in_range(cfg.data, "data", DataError)
    try:
        builder = DATASETS.get(cfg.data.name)
    except KeyError as exc:
        raise DataError(f"data.name: {exc.args[0]}") from None
    bundle = builder(cfg.data, data_root(cfg.data), cfg.seed)
    bundle.rotation = resolve_rotation(
        cfg.data.name, cfg.data.rotation_degrees, cfg.data.imbalance_ratio, bundle.augment
    )
    if cfg.data.val_fraction > 0:
        bundle = hold_out_val(bundle, cfg.data.val_fraction, cfg.data.subset_seed)
    return bundle


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) indices: ``round(n_c * fraction)`` per class, at least one kept per class and,
    when ``fraction > 0``, at least one held out of every class that has two (so a validated fraction
    never leaves an empty split).

    Seeded by the *data* seed, so runs that differ only in their training seed share one split.
    """
    gen = torch.Generator().manual_seed(7919 + seed)
    kept, held = [], []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        wanted = max(round(len(idx) * fraction), 1 if fraction > 0 else 0)
        n_held = min(wanted, max(len(idx) - 1, 0))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def hold_out_val(bundle: DataBundle, fraction: float, seed: int) -> DataBundle:
    """Move a stratified ``fraction`` of the training split into ``val`` (honest best-epoch selection)."""
    kept, held = stratified_split(bundle.train.labels, fraction, seed, bundle.num_classes)
    train, val = bundle.train.subset(kept), bundle.train.subset(held)
    bundle.train = train
    bundle.val = val
    bundle.train_counts = class_counts(train.labels, bundle.num_classes)
    return bundle


def embedded_bundle(
    name: str,
    cfg: DataConfig,
    train: Split,
    test: Split,
    *,
    class_names: list[str],
    preset: Preset,
) -> DataBundle:
    """The bundle of an embedded dataset. ``normalize = "auto"`` uses the training split's own
    per-channel mean and std (no published constants exist for these images)."""
    assert train.images is not None
    channels, size = int(train.images.shape[1]), int(train.images.shape[-1])
    auto_norm = cfg.normalize == "auto"
    pres = resolve_presentation(cfg, Preset(size, preset.augment, preset.pad, "none"), channels, size)
    mean, std = pres.mean, pres.std
    if auto_norm:
        pixels = train.images.float().div_(255).transpose(0, 1).reshape(channels, -1)
        mean = tuple(round(float(v), 4) for v in pixels.mean(dim=1))
        std = tuple(round(max(float(v), 1e-3), 4) for v in pixels.std(dim=1))
    num_classes = len(class_names)
    return DataBundle(
        name=name,
        train=train,
        test=test,
        val=None,
        num_classes=num_classes,
        in_channels=channels,
        image_size=size,
        class_names=class_names,
        label_map=None,
        mean=mean,
        std=std,
        augment=pres.augment,
        pad=pres.pad,
        train_counts=class_counts(train.labels, num_classes),
    )
