"""The Model Doctor plugin: diagnose in ``setup`` (cached), then add the channel/spatial loss terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine import distributed
from engine.doctor.artifacts import slug, write_array, write_heatmap, write_sift_list
from engine.doctor.constraint import ChannelConstraint, ConstrainedLayer
from engine.doctor.diagnose import DiagnosisError, diagnose, resolve_layers, split_ids
from engine.doctor.masks import combine_masks, threshold_mask
from engine.plugins import RunContext, TrainPlugin
from engine.schema.config import EngineConfig, is_leaky


def reinitialise(model: nn.Module) -> None:
    """Fresh default parameters for every layer (``doctor.init = "scratch"``, reference-spec.md §9.3)."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


def load_combine_mask(combine_path: str, layer: str) -> torch.Tensor:
    """The other experiment's mask for ``layer`` from its artifacts (``artifacts/doctor`` or a run dir)."""
    root = Path(combine_path)
    for folder in (root, root / "doctor", root / "artifacts" / "doctor"):
        candidate = folder / f"mask_{slug(layer)}.npy"
        if candidate.is_file():
            return torch.from_numpy(np.load(candidate)).bool()
    raise DiagnosisError(
        f"doctor.mask.combine_with: no mask for layer {layer!r} under {combine_path} "
        f"(expected mask_{slug(layer)}.npy; run that experiment's diagnosis first)"
    )


class DoctorPlugin(TrainPlugin):
    name = "doctor"

    def __init__(self, cfg: EngineConfig) -> None:
        assert cfg.doctor is not None
        self.cfg = cfg
        self.doctor = cfg.doctor
        self.constraint: ChannelConstraint | None = None
        self.masks: dict[str, torch.Tensor] = {}

    def setup(self, ctx: RunContext) -> None:
        doctor = self.doctor
        layers = resolve_layers(ctx.model, doctor.layers, "doctor.layers")
        # Under data parallelism rank 0 diagnoses (the single-process pass: same sift, energies and
        # masks; it alone writes artifacts and the cache) and every rank receives its masks.
        masks = self.diagnose_and_write(ctx, layers) if distributed.world().is_main else None
        self.masks = distributed.broadcast_object(masks, ctx.device)  # type: ignore[assignment]
        if doctor.init == "scratch":
            reinitialise(ctx.model)
            ctx.log("doctor: model re-initialised after diagnosis (init = scratch)")
        self.constraint = ChannelConstraint(
            [
                ConstrainedLayer(name, module, self.masks[name].float().to(ctx.device))
                for name, module in layers.items()
            ],
            weight=doctor.weight,
            psi=doctor.psi,
            gating=doctor.gating,
            scaling=doctor.mask.grad_scaling,
            noise_std=doctor.noise_std,
            gate_on=doctor.gate_on,
            spatial_beta=doctor.spatial_beta,
        )

    def diagnose_and_write(self, ctx: RunContext, layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """Sift, energies and masks of ``layers`` (cached), with their artifacts; {layer: mask [C, K]}."""
        doctor = self.doctor
        leaky = is_leaky(ctx.cfg)
        masks: dict[str, torch.Tensor] = {}
        sifted, energies, hit = diagnose(
            ctx,
            layers,
            sift=doctor.sift,
            source=doctor.mask.source,
            phi=doctor.mask.phi,
            scaling=doctor.mask.grad_scaling,
            wrt="output",
            cache_kind="doctor",
        )
        ctx.log(f"doctor: diagnosis {'loaded from cache' if hit else 'computed'} for {', '.join(layers)}")
        out = Path(ctx.artifacts_dir) / "doctor"
        base = {"leaky": leaky, "cache": "hit" if hit else "miss"}
        write_sift_list(
            out / "sift.json",
            sifted,
            ids=split_ids(ctx.data, doctor.sift.split),
            class_names=list(ctx.data.class_names),
            split=doctor.sift.split,
            mode=doctor.sift.mode,
            emit=ctx.emit,
            leaky=leaky,
        )
        empty = [c for c, n in enumerate(sifted.counts.tolist()) if n == 0]
        if empty:
            ctx.log(f"doctor: no sifted images for classes {empty}; their masks come from zero energies")
        mask_cfg = doctor.mask
        for name, energy in energies.items():
            mask = threshold_mask(energy, mask_cfg.threshold, theta=mask_cfg.theta, topk=mask_cfg.topk)
            if mask_cfg.combine_path:
                mask = combine_masks(
                    mask, load_combine_mask(mask_cfg.combine_path, name), mask_cfg.combine_op
                )
            masks[name] = mask
            info = {**base, "layer": name, "selected_fraction": round(float(mask.float().mean()), 4)}
            write_array(out / f"energy_{slug(name)}.npy", energy.numpy(), ctx.emit, "channel_energy", info)
            write_array(out / f"mask_{slug(name)}.npy", mask.numpy(), ctx.emit, "channel_mask", info)
            for what, matrix in (("energy", energy.numpy()), ("mask", mask.numpy())):
                write_heatmap(
                    out / f"{what}_{slug(name)}.png",
                    matrix,
                    title=f"{what} at {name}",
                    xlabel="channel",
                    ylabel="class",
                    emit=ctx.emit,
                    summary={**info, "of": f"channel_{what}"},
                )
        return masks

    def set_training(self, training: bool) -> None:
        if self.constraint is not None:
            self.constraint.set_training(training)

    def loss_terms(self, logits: torch.Tensor, batch: Any) -> dict[str, torch.Tensor]:
        if self.constraint is None:
            return {}
        total = getattr(batch, "total", None)
        return self.constraint.loss_terms(logits, batch.labels, getattr(batch, "masks", None), total)
