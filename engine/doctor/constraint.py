"""Treatment (reference-spec.md §5.4-§5.6): channel loss, spatial loss and feature noise at hooked layers.

Both losses are functions of G(t) = dS(t)/dA taken with ``create_graph=True``, so they are trained by
double back-propagation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.doctor.masks import Scaling, spatial_sum, target_score

Psi = Literal["abs", "relu", "relu_plus_negall"]
Gating = Literal["none", "pos_act"]
# Which activation pos_act gating reads when feature noise is on: the layer's own output ("clean",
# the default: the gate then means "channels this model activates", and the noise stays a
# regulariser of everything downstream), or the output with the noise added ("noisy": the FORK's
# order, whose hook adds the noise in place before its gradient is taken).
GateOn = Literal["clean", "noisy"]


def pseudo_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """r_b: the rank-2 class when the prediction is right, else the (wrong) rank-1 class."""
    top2 = logits.detach().topk(2, dim=1).indices
    return torch.where(top2[:, 0] == labels, top2[:, 1], top2[:, 0])


def _energy_terms(
    grad: torch.Tensor, act: torch.Tensor, psi: Psi, gating: Gating
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample channel energies [B, K], unmasked all-negative sum) for one G(t)."""
    if gating == "pos_act":
        grad = grad * (act.detach() >= 0).to(grad.dtype)
    grad = grad.float()
    if psi == "abs":
        return spatial_sum(grad.abs()), grad.new_zeros(())
    if psi == "relu":
        return spatial_sum(grad.relu()), grad.new_zeros(())
    # "positive gradients masked, negative gradients fully constrained" (FORK README items 6-11)
    return spatial_sum(grad.relu()), (-grad).relu().sum()


def channel_loss_terms(
    grad_true: torch.Tensor,
    grad_rival: torch.Tensor,
    act: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    rivals: torch.Tensor,
    *,
    psi: Psi = "abs",
    gating: Gating = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_high, L_low) of reference-spec.md §5.4 for one layer; ``mask`` is float [C, K]."""
    batch = max(labels.shape[0], 1)  # an empty batch (a rank's empty shard): zero, not 0/0
    e_rival, neg_rival = _energy_terms(grad_rival, act, psi, gating)
    e_true, neg_true = _energy_terms(grad_true, act, psi, gating)
    high = ((e_rival * mask[rivals]).sum() + neg_rival) / batch
    low = ((e_true * (1.0 - mask[labels])).sum() + neg_true) / batch
    return high, low


def spatial_loss(grad_true: torch.Tensor, fg_masks: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * sum |(1 - m~) G(y)| with the foreground mask resized bilinearly to the feature map."""
    resized = F.interpolate(fg_masks.float(), size=grad_true.shape[-2:], mode="bilinear", align_corners=False)
    return beta * ((1.0 - resized) * grad_true.float()).abs().sum()


@dataclass
class ConstrainedLayer:
    name: str  # dotted module path
    module: nn.Module
    mask: torch.Tensor  # float [C, K] on the run's device


class ChannelConstraint:
    """Hooks the constrained layers and turns the last forward pass into loss terms."""

    def __init__(
        self,
        layers: list[ConstrainedLayer],
        *,
        weight: float,
        psi: Psi = "abs",
        gating: Gating = "none",
        scaling: Scaling = "per_sample",
        noise_std: float = 0.0,
        spatial_beta: float = 0.0,
        gate_on: GateOn = "clean",
    ) -> None:
        self.layers = layers
        self.gate_on: GateOn = gate_on
        self.noisy: dict[nn.Module, torch.Tensor] = {}  # each layer's last noisy output ("noisy" gating)
        self.weight = weight
        self.psi: Psi = psi
        self.gating: Gating = gating
        self.scaling: Scaling = scaling
        self.noise_std = noise_std
        self.spatial_beta = spatial_beta
        self.features: dict[str, torch.Tensor] = {}
        self.training = True
        self._capture_handles = [
            layer.module.register_forward_hook(self._capture(layer.name)) for layer in layers
        ]
        self._noise_handles: list[torch.utils.hooks.RemovableHandle] = []

    def _capture(self, name: str):
        def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor | None:
            if not (self.training and torch.is_grad_enabled()):
                return None
            self.features[name] = out
            return out.clone()  # keep the recorded A safe from an in-place activation downstream

        return hook

    def _noise_hook(self, module: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
        noisy = out + self.noise_std * torch.randn_like(out)
        if self.gate_on == "noisy" and self.gating == "pos_act":
            self.noisy[module] = noisy.detach()
        return noisy

    def set_training(self, training: bool) -> None:
        """Noise only while training (reference-spec.md §5.6); every noise hook is removed for evaluation.

        The reference clears its hook list after removing the first hook, so with several layers the
        rest stay on during evaluation (reference-spec.md §5.6); here each handle is removed.
        """
        self.training = training
        for handle in self._noise_handles:
            handle.remove()
        self._noise_handles = []
        if training and self.noise_std > 0:
            # Registered after the capture hook, so the recorded A is the noise-free output and the
            # noise reaches everything downstream; dz/dA is the same with or without the additive noise.
            self._noise_handles = [
                layer.module.register_forward_hook(self._noise_hook) for layer in self.layers
            ]

    def remove(self) -> None:
        self.set_training(False)
        for handle in self._capture_handles:
            handle.remove()
        self._capture_handles = []

    def loss_terms(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        fg_masks: torch.Tensor | None = None,
        batch_total: int | None = None,  # the global batch under data parallelism (repo scaling)
    ) -> dict[str, torch.Tensor]:
        """{"channel": weight * sum_l (L_high + L_low)[, "spatial": ...]} from the last forward pass."""
        if not (self.training and torch.is_grad_enabled()) or not self.features:
            return {}
        acts = [self.features[layer.name] for layer in self.layers]
        self.features = {}
        # the activation the gate reads: the recorded (clean) A, or the noisy one when asked and present
        gates = [self.noisy.get(layer.module, act) for layer, act in zip(self.layers, acts, strict=True)]
        self.noisy = {}
        rivals = pseudo_labels(logits, labels)
        score_true = target_score(logits, labels, self.scaling, batch_total)
        score_rival = target_score(logits, rivals, self.scaling, batch_total)
        grads_true = torch.autograd.grad(score_true, acts, create_graph=True)
        grads_rival = torch.autograd.grad(score_rival, acts, create_graph=True)
        total = logits.new_zeros((), dtype=torch.float32)
        for layer, gate, g_true, g_rival in zip(self.layers, gates, grads_true, grads_rival, strict=True):
            high, low = channel_loss_terms(
                g_true, g_rival, gate, layer.mask, labels, rivals, psi=self.psi, gating=self.gating
            )
            total = total + high + low
        terms = {"channel": self.weight * total}
        if self.spatial_beta > 0 and fg_masks is not None:
            spatial = logits.new_zeros((), dtype=torch.float32)
            for act, g_true in zip(acts, grads_true, strict=True):
                if act.dim() == 4:
                    spatial = spatial + spatial_loss(g_true, fg_masks, self.spatial_beta)
            terms["spatial"] = spatial
        return terms
