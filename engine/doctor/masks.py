"""Channel masks (reference-spec.md §5.3): per-sample channel energies, class aggregation, thresholds.

Only per-sample channel energies [B, K] leave a batch (summed over space right away), so a class's
statistics are [N, K] rather than [N, K, H, W] gradient maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

Source = Literal["grad", "grad_pos_act", "act", "relu_act"]
Phi = Literal["abs", "relu"]
Scaling = Literal["per_sample", "repo"]
Wrt = Literal["output", "input"]


def target_score(
    logits: torch.Tensor, targets: torch.Tensor, scaling: Scaling, batch_total: int | None = None
) -> torch.Tensor:
    """S(t) = sum_b z_{b,t_b} (per_sample) or its batch mean (repo: the reference's raw-logit NLL).

    The batch mean puts a 1/B factor on every per-sample gradient (reference-spec.md §5.8); B is the global
    batch (``batch_total``) when a rank holds a shard of it, so every rank's factor is one process's.
    """
    picked = logits.gather(1, targets.view(-1, 1)).sum()
    if scaling == "repo":
        return picked / (batch_total or logits.shape[0])
    return picked


def spatial_sum(q: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] -> [B, K]; an FC output [B, F] stays as it is."""
    return q.flatten(2).sum(dim=2) if q.dim() > 2 else q


def apply_phi(q: torch.Tensor, phi: Phi) -> torch.Tensor:
    return q.abs() if phi == "abs" else q.relu()


def source_tensor(source: Source, grad: torch.Tensor | None, act: torch.Tensor) -> torch.Tensor:
    """The quantity Q whose channel energies make the mask (reference-spec.md §5.3, FORK `flag` 1-4)."""
    if source == "act":
        return act
    if source == "relu_act":
        return act.relu()
    assert grad is not None
    if source == "grad_pos_act":
        return grad * (act >= 0).to(grad.dtype)
    return grad


@contextmanager
def capture_features(modules: dict[str, nn.Module], wrt: Wrt = "output") -> Iterator[dict[str, torch.Tensor]]:
    """Record each module's output (or input) during forward passes inside the block.

    The recorded output is handed on as a copy, so an in-place activation that follows the module
    (AlexNet's ReLU(inplace=True)) cannot overwrite the recorded pre-activation values.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in modules.items():
        if wrt == "output":

            def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor, name: str = name) -> torch.Tensor:
                store[name] = out
                return out.clone()

            handles.append(module.register_forward_hook(hook))
        else:

            def pre_hook(_m: nn.Module, inp: tuple, name: str = name) -> None:
                store[name] = inp[0]

            handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def layer_energies(
    model: nn.Module,
    modules: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    source: Source = "grad",
    phi: Phi = "abs",
    scaling: Scaling = "per_sample",
    wrt: Wrt = "output",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and per-sample channel energies e[b, k] = sum_hw phi(Q[b, k, h, w]) for each module.

    The model should be in eval mode: then sample b's gradient of sum_b z_{b,y_b} is exactly
    dz_{b,y_b}/dA_b, so one backward pass gives every per-sample gradient.
    """
    needs_grad = source in ("grad", "grad_pos_act")
    with torch.enable_grad(), capture_features(modules, wrt) as feats:
        inputs = images.detach().requires_grad_(needs_grad and wrt == "input")
        logits = model(inputs)
        grads: tuple[torch.Tensor | None, ...] = (None,) * len(modules)
        if needs_grad:
            tensors = [feats[name] for name in modules]
            score = target_score(logits, labels, scaling)
            grads = torch.autograd.grad(score, tensors, allow_unused=True)
            grads = tuple(
                torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)
            )
        energies = {
            name: spatial_sum(apply_phi(source_tensor(source, g, feats[name].detach()).float(), phi)).detach()
            for name, g in zip(modules, grads, strict=True)
        }
    return logits.detach(), energies


def class_energy(payload: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """v[c, k] = sum over the kept samples of class c of e[n, k]; payload [C, N, K], valid [C, N]."""
    return (payload * valid.unsqueeze(-1).to(payload.dtype)).sum(dim=1)


def threshold_mask(
    energy: torch.Tensor,
    mode: Literal["mean", "minmax", "topk", "gt_mean"],
    *,
    theta: float = 0.2,
    topk: int = 10,
) -> torch.Tensor:
    """Binary [C, K] mask from the class-by-channel energy matrix, thresholded per class (row).

    mean: v >= row mean (FORK grad_sift, inclusive). gt_mean: v > row mean (kernel pattern sift,
    reference-spec.md §6.4). minmax: (v - min) / (max - min + 1e-5) > theta (OFFICIAL grad_calculate).
    topk: v >= the (r+1)-th largest value of the row (FORK `threshold=r`).
    """
    energy = energy.float()
    if mode == "mean":
        return energy >= energy.mean(dim=1, keepdim=True)
    if mode == "gt_mean":
        return energy > energy.mean(dim=1, keepdim=True)
    if mode == "minmax":
        low = energy.min(dim=1, keepdim=True).values
        high = energy.max(dim=1, keepdim=True).values
        return (energy - low) / (high - low + 1e-5) > theta
    if mode == "topk":
        rank = min(topk + 1, energy.shape[1])
        kth = energy.topk(rank, dim=1).values[:, -1:]
        return energy >= kth
    raise ValueError(f"unknown threshold {mode!r}")


def combine_masks(
    mask: torch.Tensor, other: torch.Tensor, op: Literal["union", "intersection"]
) -> torch.Tensor:
    if mask.shape != other.shape:
        raise ValueError(f"cannot combine masks of shapes {tuple(mask.shape)} and {tuple(other.shape)}")
    return (mask | other) if op == "union" else (mask & other)
