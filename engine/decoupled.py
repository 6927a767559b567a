"""Decoupled classifier learning (Kang et al., ICLR 2020) and MiSLAS's second stage, as plugins.

Both start from a ``from`` checkpoint (``init_checkpoint``) and act on the model's head (the final
Linear every model names as ``model.head``); the backbone is everything else.

``decouple`` (block ``DecoupleConfig``) trains a second stage:

* every backbone parameter is frozen (no gradient, so no autograd graph through it either);
* train = "classifier": the head's weight and bias are trained (cRT; ``reset_classifier`` re-initialises
  them first, as cRT's fresh classifier);
* train = "lws": the head's weight and bias stay frozen and per-class scales f (init 1) are learnt,
  logit_i = f_i * (w_i . x + b_i) (``ScaledHead``);
* train = "classifier+lws": both (MiSLAS stage 2, with ``LearnableWeightScaling`` after the classifier);
* bn = "frozen": the backbone's BatchNorm and Dropout layers stay in eval mode while training, so the
  features are the stage-1 model's own (cRT/LWS); bn = "shift": the backbone keeps train mode, so its
  BatchNorm running mean/var are re-estimated on the stage-2 stream -- MiSLAS's shift learning on BN
  (its ``shift_bn`` runs the backbone under ``torch.no_grad()`` in train mode: statistics move, no
  BN weight or bias is learnt, and so here);
* the head's parameters learn at lr * ``classifier_lr_factor`` (MiSLAS ``lr_factor``), the scales at lr.

``tau_norm`` (block ``TauNormConfig``) trains nothing: before the evaluation of epoch e it sets the head
to w_i / ||w_i||^tau_e of the ``from`` weights with the bias dropped (``tau_norm.py``), so the epochs
are the sweep and best-epoch selection picks tau.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoint import CheckpointError
from engine.plugins import RunContext, TrainPlugin
from engine.schema.config import DecoupleConfig, EngineConfig, TauNormConfig


class ScaledHead(nn.Module):
    """LWS: logit_i = f_i * (w_i . x + b_i) with the wrapped head's w, b and learnable scales f (init 1).

    The head's parameters are re-registered here under their own names, so the state dict keeps
    ``<head>.weight`` / ``<head>.bias`` and adds ``<head>.scales``.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.cosine = not isinstance(head, nn.Linear)  # LDAM's NormedLinear: cosine logits, no bias
        self.weight = head.weight
        self.bias = getattr(head, "bias", None)
        self.in_features, self.out_features = head.in_features, head.out_features
        self.scales = nn.Parameter(torch.ones(head.out_features, device=head.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            logits = F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()
        else:
            logits = F.linear(x, self.weight, self.bias)
        return logits * self.scales


def tau_normalised(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """w_i / ||w_i||^tau, row by row (Kang et al.'s tau-normalisation)."""
    return weight / weight.norm(dim=1, keepdim=True).pow(tau)


def _head(model: nn.Module) -> tuple[str, nn.Module]:
    inner = getattr(model, "_orig_mod", model)
    path = inner.head
    return path, inner.get_submodule(path)


def _pin_eval(module: nn.Module) -> None:
    """Keep ``module`` in eval mode through every later ``model.train()``.

    ``nn.Module.train`` recurses through children by calling their ``train``; shadowing it on this
    instance stops the recursion here, which is what "frozen statistics" needs, while the state dict
    and the class are untouched.
    """

    def stay_in_eval(mode: bool = True) -> nn.Module:
        return nn.Module.train(module, False)

    module.train = stay_in_eval  # type: ignore[method-assign]
    module.eval()


def _require_from(cfg: EngineConfig, block: str) -> str:
    if not cfg.init_checkpoint:
        raise CheckpointError(
            f'{block} works on a trained model: set `from = "<stage-1 experiment>"` in the experiment '
            "(it becomes init_checkpoint), then run it after that experiment"
        )
    return cfg.init_checkpoint


class Decoupled(TrainPlugin):
    name = "decouple"

    def __init__(self, cfg: DecoupleConfig) -> None:
        self.cfg = cfg

    def setup(self, ctx: RunContext) -> None:
        _require_from(ctx.cfg, "decouple")
        model = getattr(ctx.model, "_orig_mod", ctx.model)
        path, head = _head(model)
        model.requires_grad_(False)
        if self.cfg.reset_classifier:
            reset = getattr(head, "reset_parameters", None)
            if reset is None:
                raise CheckpointError(f"decouple.reset_classifier: the head {path} cannot be re-initialised")
            reset()
        head_params = [p for p in (head.weight, getattr(head, "bias", None)) if p is not None]
        if self.cfg.train in ("classifier", "classifier+lws"):
            for p in head_params:
                p.requires_grad_(True)
            for group in ctx.optimizer.param_groups:
                if any(p is q for p in group["params"] for q in head_params):
                    group["lr_factor"] = self.cfg.classifier_lr_factor
        if self.cfg.train in ("lws", "classifier+lws"):
            scaled = ScaledHead(head)
            model.set_submodule(path, scaled)
            weight_decay = ctx.optimizer.param_groups[0].get("weight_decay", 0.0)
            ctx.optimizer.add_param_group({"params": [scaled.scales], "weight_decay": weight_decay})
            head = scaled
        if self.cfg.bn == "frozen":
            for module in model.modules():
                if module is not head and isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
                    _pin_eval(module)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        ctx.log(
            f"decouple: train = {self.cfg.train}, bn = {self.cfg.bn}; {trained} trainable parameters "
            f"(head {path})"
        )


class TauNorm(TrainPlugin):
    name = "tau_norm"
    skips_training = True  # the trainer makes no pass over the training data (engine/train.py)

    def __init__(self, cfg: TauNormConfig) -> None:
        self.taus = cfg.taus
        self.next_epoch = 0  # the epoch whose tau the next evaluation uses

    def setup(self, ctx: RunContext) -> None:
        _require_from(ctx.cfg, "tau_norm")
        model = getattr(ctx.model, "_orig_mod", ctx.model)
        model.requires_grad_(False)
        self.path, self.head = _head(model)
        self.weight0 = self.head.weight.detach().clone()  # the `from` weights, before any tau
        self.log = ctx.log
        (ctx.artifacts_dir / "tau_norm.json").write_text(
            json.dumps({"taus": list(self.taus), "epoch_of_tau": "epoch e evaluates taus[e]"})
        )

    def sub_batches(self, batch: Any) -> list[Any] | None:
        return []  # no optimiser step: tau-normalisation is post-hoc

    @torch.no_grad()
    def set_training(self, training: bool) -> None:
        if training or self.next_epoch >= len(self.taus):
            return
        tau = self.taus[self.next_epoch]
        self.head.weight.copy_(tau_normalised(self.weight0, tau))
        bias = getattr(self.head, "bias", None)
        if bias is not None:
            bias.zero_()
        self.log(f"tau_norm: epoch {self.next_epoch} evaluates tau = {tau:g}")
        self.next_epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {"next_epoch": self.next_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_epoch = int(state.get("next_epoch", 0))


def build_decoupled(cfg: EngineConfig) -> TrainPlugin | None:
    return Decoupled(cfg.decouple) if cfg.decouple is not None else None


def build_tau_norm(cfg: EngineConfig) -> TrainPlugin | None:
    return TauNorm(cfg.tau_norm) if cfg.tau_norm is not None else None
