"""What the engine can build, by name, the parameters each name takes and the ranges they lie in.

Standard library only (the manager validates experiments.toml against it). The implementations
register themselves under the same names in ``engine.models``, ``engine.losses`` and ``engine.data``;
a test checks that registries and catalogue agree, and another walks every range below with values
just inside, on and just outside each bound to prove that what validates builds.

This module is the one place where a range lives: ``engine.schema.validate`` checks them when it
validates, and the engine's builders raise the same messages through ``bound_problem`` when they are
handed a value directly (tests, plugins) -- they keep no ranges of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODEL_NAMES = (
    "resnet32",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet152",
    "vgg16",
    "alexnet",
    "alexnetv2",
    "alexnetv3",
    "senet34",
    "resnext50",
    "wideresnet28_10",
)
MODEL_PARAMS: dict[str, set[str]] = {name: {"in_channels", "num_classes", "init"} for name in MODEL_NAMES}
# The smallest square input (px) each model's forward pass accepts (the models' ``min_input_size``;
# a test builds every model and compares).
MODEL_MIN_INPUT: dict[str, int] = {
    **dict.fromkeys(MODEL_NAMES, 1),
    "vgg16": 32,
    "alexnet": 15,
    "alexnetv2": 63,
    "alexnetv3": 9,
}

_COMMON_DATA = {
    "root",
    "image_size",
    "val_fraction",
    "augment",
    "normalize",
    "num_workers",
    "in_memory",
    "rotation_degrees",
}
_LT = {"imbalance_ratio", "imbalance_profile", "imbalance_reverse", "subset_seed"}
DATASET_PARAMS: dict[str, set[str]] = {
    "synthetic": _COMMON_DATA
    | _LT
    | {"num_classes", "samples_per_class", "test_per_class", "channels", "difficulty"},
    "digits": _COMMON_DATA | _LT | {"test_fraction"},
    "cifar10": _COMMON_DATA | _LT,
    "cifar100": _COMMON_DATA | _LT | {"class_order"},
    "stl10": _COMMON_DATA | _LT | {"class_order"},
    "image_folder": _COMMON_DATA | _LT | {"class_order", "train_dir", "test_dir", "mask_dir", "default_mask"},
    "oltr": _COMMON_DATA | {"train_list", "eval_list", "num_classes"},
    "image_mask": _COMMON_DATA | {"class_order", "train_dir", "test_dir", "mask_dir", "default_mask"},
}
DATASET_NAMES = tuple(DATASET_PARAMS)

LOSS_PARAMS: dict[str, set[str]] = {
    "ce": {"label_smoothing"},
    "fl": {"gamma", "weight"},
    "efl": {"gamma", "scale_factor", "mode", "weight"},
    "rfl": {"threshold", "gamma"},
    "refl": {"threshold", "gamma", "scale_factor", "version", "mode"},
    "dfl": set(),
    "cb": {"beta", "base", "gamma"},
    "balanced_softmax": set(),
    "logit_adjusted": {"tau"},
    "ldam": {"max_m", "s", "drw_epoch", "drw_beta"},
    "label_aware_smoothing": {"smooth_head", "smooth_tail", "shape", "power"},
}
LOSS_NAMES = tuple(LOSS_PARAMS)

SAMPLER_PARAMS: dict[str, set[str]] = {
    "random": set(),
    "class_aware": {"num_samples_cls", "epoch_length"},
    "balanced_iid": {"epoch_length"},
}
OPTIM_PARAMS: dict[str, set[str]] = {
    "sgd": {"lr", "momentum", "nesterov", "weight_decay", "decay_bn_and_bias"},
    "adam": {"lr", "weight_decay", "decay_bn_and_bias", "betas"},
    "adamw": {"lr", "weight_decay", "decay_bn_and_bias", "betas"},
}
SCHEDULE_PARAMS: dict[str, set[str]] = {
    "warmup_step": {"warmup_epochs", "warmup", "milestones", "factor"},
    "cosine": {"t_max", "eta_min"},
    "step": {"step_size", "gamma"},
    "constant": set(),
    "linear_ramp": {"ramp_epochs"},
}

# The blocks that pick an implementation by ``name``, in config order, each with the parameters every
# name takes. ``loss = "ce"`` (a bare name) means ``loss = { name = "ce" }``: see expand_bare_names.
NAMED_BLOCKS: dict[str, dict[str, set[str]]] = {
    "model": MODEL_PARAMS,
    "data": DATASET_PARAMS,
    "loss": LOSS_PARAMS,
    "sampler": SAMPLER_PARAMS,
    "optim": OPTIM_PARAMS,
    "schedule": SCHEDULE_PARAMS,
}


def expand_bare_names(table: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``table`` with every named block given as a string turned into ``{name = ...}``."""
    out = dict(table)
    for block in NAMED_BLOCKS:
        if isinstance(out.get(block), str):
            out[block] = {"name": out[block]}
    return out


# --------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Bound:
    """The interval a number must lie in; ``None`` leaves that side open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the low end itself is excluded
    high_open: bool = False
    note: str = ""  # why, when the range is not obvious

    def holds(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'greater than' if self.low_open else 'at least'} {self.low:g}"
        assert self.high is not None
        return f"{'less than' if self.high_open else 'at most'} {self.high:g}"


_AT_LEAST_1 = Bound(1)
_AT_LEAST_0 = Bound(0)
_POSITIVE = Bound(0, low_open=True)
_FRACTION_OPEN = Bound(0, 1, low_open=True, high_open=True)
_PROBABILITY_BELOW_1 = Bound(0, 1, high_open=True)

# dotted key -> the range of that number; for a list (``optim.betas``) the range of each item. A named
# block's key is checked only when the chosen name takes that parameter.
BOUNDS: dict[str, Bound] = {
    "epochs": _AT_LEAST_1,
    "batch_size": _AT_LEAST_1,
    "eval_batch_size": _AT_LEAST_1,
    "step_events_per_second": Bound(0, note="0 turns step events off"),
    "distributed.processes": Bound(0, 64, note="0: one process per GPU given to the run (1 on the CPU)"),
    "model.in_channels": _AT_LEAST_1,
    "model.num_classes": _AT_LEAST_1,
    "data.image_size": _AT_LEAST_1,
    "data.val_fraction": _PROBABILITY_BELOW_1,
    "data.num_workers": _AT_LEAST_0,
    "data.imbalance_ratio": Bound(1, note="ρ = n_max / n_min; 1 means balanced"),
    "data.num_classes": _AT_LEAST_1,
    "data.samples_per_class": _AT_LEAST_1,
    "data.test_per_class": _AT_LEAST_1,
    "data.channels": _AT_LEAST_1,
    "data.difficulty": Bound(0, 1),
    "data.test_fraction": _FRACTION_OPEN,
    "loss.label_smoothing": _PROBABILITY_BELOW_1,
    "loss.gamma": _AT_LEAST_0,
    "loss.weight": _POSITIVE,
    "loss.threshold": Bound(0, 1, low_open=True, high_open=True, note="p_t above it is down-weighted"),
    "loss.scale_factor": _AT_LEAST_0,
    "loss.beta": _PROBABILITY_BELOW_1,
    "loss.max_m": _POSITIVE,
    "loss.s": _POSITIVE,
    "loss.drw_epoch": _AT_LEAST_0,
    "loss.drw_beta": _PROBABILITY_BELOW_1,
    "loss.smooth_head": _PROBABILITY_BELOW_1,
    "loss.smooth_tail": _PROBABILITY_BELOW_1,
    "loss.power": _POSITIVE,
    "data.rotation_degrees": Bound(0, 180, note="angle ~ U(-d, d) degrees"),
    "mix.alpha": Bound(0, low_open=True, note="lambda ~ Beta(alpha, alpha)"),
    "mix.prob": Bound(0, 1),
    "decouple.classifier_lr_factor": _AT_LEAST_0,
    "tau_norm.taus": Bound(0, 5, note="w_i / ||w_i||^tau; the reference sweeps [0, 2]"),
    "sampler.num_samples_cls": _AT_LEAST_1,
    "optim.lr": _AT_LEAST_0,
    "optim.momentum": _AT_LEAST_0,
    "optim.weight_decay": _AT_LEAST_0,
    "optim.betas": _PROBABILITY_BELOW_1,
    "schedule.warmup_epochs": _AT_LEAST_0,
    "schedule.milestones": _AT_LEAST_0,
    "schedule.factor": _AT_LEAST_0,
    "schedule.t_max": _AT_LEAST_1,
    "schedule.eta_min": _AT_LEAST_0,
    "schedule.step_size": _AT_LEAST_1,
    "schedule.gamma": _AT_LEAST_0,
    "schedule.ramp_epochs": _AT_LEAST_1,
}
# (dotted key, name) -> a range that replaces the general one for that name.
NAME_BOUNDS: dict[tuple[str, str], Bound] = {
    # The EFL weighting factor gamma_y / gamma divides by gamma.
    ("loss.gamma", "efl"): Bound(0, low_open=True, note="the EFL weighting factor divides by it"),
    ("loss.gamma", "refl"): Bound(0, low_open=True, note="the EFL weighting factor divides by it"),
}
# List-valued keys whose length is fixed.
LIST_LENGTHS: dict[str, int] = {"optim.betas": 2}


def bound_of(key: str, name: str | None = None) -> Bound | None:
    """The range of dotted ``key`` (for the implementation ``name`` of its block), or None."""
    return NAME_BOUNDS.get((key, name or "")) or BOUNDS.get(key)


def bound_problem(key: str, value: Any, name: str | None = None) -> str | None:
    """What is wrong with ``value`` for ``key`` ("must be in (0, 1), got 1.0"), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # types are checked by the schema
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    bound = bound_of(key, name)
    if bound is None or bound.holds(value):
        return None
    why = f" ({bound.note})" if bound.note else ""
    return f"must be {bound.text()}{why}, got {value}"


# --------------------------------------------------------------------------- data shapes

# name -> (side in px without data.image_size, channels); None where only the files know (folders).
# ``synthetic`` takes its channels from data.channels.
DATASET_SHAPES: dict[str, tuple[int | None, int | None]] = {
    "synthetic": (32, None),
    "digits": (32, 1),
    "cifar10": (32, 3),
    "cifar100": (32, 3),
    "stl10": (224, 3),
    "image_folder": (None, 3),
    "oltr": (224, 3),
    "image_mask": (None, 3),
}
# data.normalize -> the channels its constants are for (1: repeated over any number of channels).
NORMALIZE_CHANNELS: dict[str, int] = {
    "cifar10": 3,
    "cifar100": 3,
    "imagenet": 3,
    "inat": 3,
    "mnist": 1,
    "none": 1,
}

# Presets reproduce the two reference recipes of reference-spec.md §5 in one key; explicit keys win.
DOCTOR_PRESETS: dict[str, dict[str, Any]] = {
    "official": {
        "psi": "relu",
        "noise_std": 0.0,
        "init": "scratch",
        "sift": {"split": "train", "transform": "test", "per_class": 50, "mode": "high"},
        "mask": {
            "source": "grad",
            "phi": "relu",
            "threshold": "minmax",
            "theta": 0.2,
            "grad_scaling": "repo",
        },
    },
    "fork": {
        "psi": "abs",
        "noise_std": 1.0,
        "init": "from",
        "sift": {"split": "train", "transform": "train", "per_class": 100, "mode": "high"},
        "mask": {"source": "grad", "phi": "abs", "threshold": "mean", "grad_scaling": "repo"},
        # its noise hook adds noise in place before the gradient, so pos_act gates on the noisy output
        "gate_on": "noisy",
    },
}
