"""Kernel-masked fine-tuning (reference-spec.md §6.6) as a training plugin.

Each optimiser step lets only some conv kernels (output channels) move: those of the step's class
dictionary (``mode = "per_class"``: one sub-batch step per class present, ascending class order) or
of the union dictionary (``mode = "union"``: the whole batch). ``reverse`` moves the complement.

``semantics = "freeze"`` (default) keeps a masked kernel bit-identical: its weight rows and their
optimiser-state rows (momentum, Adam moments) are restored after the step, so neither weight decay
nor momentum moves it. ``"repo_zero_grad"`` only zeroes ``.grad`` as the reference does, and masked
kernels still drift through weight decay and momentum (reference-spec.md §9.8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.doctor.artifacts import write_heatmap, write_sift_list
from engine.doctor.diagnose import diagnose, resolve_layers, split_ids
from engine.kernels.patterns import (
    check_conv,
    class_dictionaries,
    expand_layer_keys,
    pattern_masks,
    select_classes,
    union_masks,
)
from engine.plugins import RunContext, TrainPlugin
from engine.schema.config import EngineConfig, KernelsConfig, is_leaky

UNION = -1  # key of the union dictionary in the per-step plans

Plan = list[tuple[nn.Parameter, torch.Tensor]]  # (parameter, indices of rows that must not move)


def frozen_rows(keep: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Indices of the kernels that must not move, given the dictionary's keep mask.

    With input-gradient masks (``grad_wrt = "input"``) the mask has K_in entries while the weight has
    K_out kernels; as in the reference, rows at or beyond K_in are never masked (reference-spec.md §9.7).
    """
    frozen = torch.zeros(out_channels, dtype=torch.bool)
    n = min(out_channels, keep.shape[0])
    frozen[:n] = ~keep[:n].cpu()
    return frozen.nonzero().flatten()


def host_labels(batch: Any) -> torch.Tensor:
    """The batch's labels on the host: the loader's own copy when the batch carries one, else one
    device-to-host copy. Per-class mode needs them there, since how many optimiser steps a batch takes
    depends on the classes it holds; that one copy is the mode's only wait for the device per batch.
    """
    labels = getattr(batch, "host_labels", None)
    return labels if labels is not None else batch.labels.cpu()


def class_runs(labels: torch.Tensor) -> tuple[list[int], list[int]]:
    """(classes present in ascending order, how many samples each) from host labels."""
    counts = torch.bincount(labels)
    present = counts.nonzero().flatten()
    return present.tolist(), counts[present].tolist()


def split_with_classes(batch: Any) -> tuple[list[Any], list[int]]:
    """One sub-batch per class present, in ascending class order, and the class of each.

    The sizes come from the host labels; the gathering stays on the device: a stable sort of the
    device labels orders samples exactly as the host's would (equal keys keep batch order).
    """
    classes, sizes = class_runs(host_labels(batch))
    order = torch.argsort(batch.labels, stable=True)
    masks = getattr(batch, "masks", None)
    pieces = []
    start = 0
    for size in sizes:
        idx = order[start : start + size]
        start += size
        pieces.append(
            dataclasses.replace(
                batch,
                images=batch.images[idx],
                labels=batch.labels[idx],
                index=batch.index[idx],
                masks=None if masks is None else masks[idx],
            )
        )
    return pieces, classes


def split_by_class(batch: Any) -> list[Any]:
    """One sub-batch per class present, in ascending class order."""
    return split_with_classes(batch)[0]


class KernelFinetunePlugin(TrainPlugin):
    name = "kernels"

    def __init__(self, cfg: EngineConfig) -> None:
        assert cfg.kernels is not None
        self.cfg = cfg
        self.kernels: KernelsConfig = cfg.kernels
        self.plans: dict[int, Plan] = {}
        self.frozen_plan: Plan = []
        self.classes: list[int] = []
        self._saved: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = []
        # id of each sub-batch of the current batch -> its class, known on the host from the split
        # (reading it back from the device labels would wait for the device once per sub-step)
        self._class_of: dict[int, int] = {}

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: RunContext) -> None:
        from engine.models import conv_layers, reference_layers

        k = self.kernels
        reference = reference_layers(ctx.model)
        layer_keys = expand_layer_keys(k.layers, reference, "kernels.layers", conv_layers(ctx.model))
        layers = resolve_layers(ctx.model, tuple(layer_keys), "kernels.layers")
        for path, module in layers.items():
            check_conv(path, module, "kernels.layers")
        freeze_keys = (
            expand_layer_keys(k.freeze_layers, reference, "kernels.freeze_layers", conv_layers(ctx.model))
            if k.freeze_layers
            else []
        )
        frozen_layers = (
            resolve_layers(ctx.model, tuple(freeze_keys), "kernels.freeze_layers") if freeze_keys else {}
        )

        sifted, energies, hit = diagnose(
            ctx,
            layers,
            sift=k.sift,
            source="grad",
            phi="relu",
            scaling="per_sample",
            wrt=k.grad_wrt,
            cache_kind="kernels",
        )
        masks = pattern_masks(energies)
        self.classes = select_classes(
            ctx.data.num_classes, k.classes, k.tail_classes, list(ctx.data.train_counts)
        )
        self._write_artifacts(ctx, sifted, energies, masks, hit)

        keep_by_step: dict[int, dict[str, torch.Tensor]] = {UNION: union_masks(masks, self.classes)}
        if k.mode == "per_class":
            keep_by_step.update({c: {name: m[c] for name, m in masks.items()} for c in self.classes})
        for step_key, keeps in keep_by_step.items():
            plan: Plan = []
            for path, keep in keeps.items():
                weight = layers[path].weight
                keep = ~keep if k.reverse else keep
                plan.append((weight, frozen_rows(keep, weight.shape[0]).to(weight.device)))
            self.plans[step_key] = plan
        for module in frozen_layers.values():
            for param in module.parameters(recurse=False):
                self.frozen_plan.append((param, torch.arange(param.shape[0], device=param.device)))
        ctx.log(
            f"kernels: {len(layers)} layers, classes {self.classes}, mode {k.mode}"
            f"{' (reverse)' if k.reverse else ''}, semantics {k.semantics}, {len(frozen_layers)} frozen layers"
        )

    def _write_artifacts(self, ctx: RunContext, sifted, energies, masks, hit: bool) -> None:
        import json

        leaky = is_leaky(ctx.cfg)
        out = Path(ctx.artifacts_dir) / "kernels"
        out.mkdir(parents=True, exist_ok=True)
        base = {"leaky": leaky, "cache": "hit" if hit else "miss", "grad_wrt": self.kernels.grad_wrt}
        write_sift_list(
            out / "sift.json",
            sifted,
            ids=split_ids(ctx.data, self.kernels.sift.split),
            class_names=list(ctx.data.class_names),
            split=self.kernels.sift.split,
            mode=self.kernels.sift.mode,
            emit=ctx.emit,
            leaky=leaky,
        )
        for kind, arrays in (("kernel_energy", energies), ("kernel_mask", masks)):
            path = out / f"{kind}.npz"
            np.savez(path, **{name: v.numpy() for name, v in arrays.items()})
            ctx.emit("artifact", kind=kind, path=str(path), summary={**base, "layers": len(arrays)})
        dictionaries = class_dictionaries(masks, self.classes)
        union = {name: m.nonzero().flatten().tolist() for name, m in union_masks(masks, self.classes).items()}
        path = out / "kernel_dict.json"
        path.write_text(
            json.dumps({"classes": self.classes, "per_class": dictionaries, "union": union}, indent=1)
        )
        ctx.emit("artifact", kind="kernel_dict", path=str(path), summary={**base, "classes": self.classes})
        fraction = torch.stack([m.float().mean(dim=1) for m in masks.values()], dim=1).numpy()
        write_heatmap(
            out / "kernel_fraction.png",
            fraction,
            title="fraction of kernels selected",
            xlabel="layer (selection order)",
            ylabel="class",
            emit=ctx.emit,
            summary={**base, "of": "kernel_mask"},
        )

    # ------------------------------------------------------------------ training hooks

    def sub_batches(self, batch: Any) -> list[Any] | None:
        if self.kernels.mode != "per_class":
            return None
        pieces, classes = split_with_classes(batch)
        self._class_of = {id(piece): c for piece, c in zip(pieces, classes, strict=True)}
        return pieces

    def _plan_for(self, batch: Any) -> Plan:
        if self.kernels.mode == "union":
            return self.plans[UNION] + self.frozen_plan
        klass = self._class_of.get(id(batch))
        if klass is None:  # a one-class batch that did not come from sub_batches
            klass = int(host_labels(batch)[0])
        # Classes outside the selection step without kernel masks (only frozen layers stay put).
        return self.plans.get(klass, []) + self.frozen_plan

    def before_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> None:
        plan = self._plan_for(batch)
        self._saved = []
        for param, rows in plan:
            if rows.numel() == 0:
                continue
            if param.grad is not None:
                param.grad.index_fill_(0, rows, 0.0)
            if self.kernels.semantics == "freeze":
                state = optimizer.state.get(param, {})
                moments = {
                    key: value.index_select(0, rows)
                    for key, value in state.items()
                    if torch.is_tensor(value) and value.shape == param.shape
                }
                self._saved.append((param, rows, param.detach().index_select(0, rows), moments))

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> None:
        with torch.no_grad():
            for param, rows, weight_rows, moments in self._saved:
                param.index_copy_(0, rows, weight_rows)
                for key, value in optimizer.state.get(param, {}).items():
                    if not (torch.is_tensor(value) and value.shape == param.shape):
                        continue
                    if key in moments:
                        value.index_copy_(0, rows, moments[key])
                    else:  # created by this step: the value it would hold had these rows never moved
                        value.index_fill_(0, rows, 0.0)
        self._saved = []
