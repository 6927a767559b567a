"""What the engine can build, by name, and the parameters each name takes.

Standard library only (the manager validates experiments.toml against it). The implementations
register themselves under the same names in ``engine.models``, ``engine.losses`` and ``engine.data``;
a test checks that registries and catalogue agree.
"""

from __future__ import annotations

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

_COMMON_DATA = {"root", "image_size", "val_fraction", "augment", "normalize", "num_workers", "in_memory"}
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

NAMED_BLOCKS: dict[str, dict[str, set[str]]] = {
    "data": DATASET_PARAMS,
    "loss": LOSS_PARAMS,
    "sampler": SAMPLER_PARAMS,
    "optim": OPTIM_PARAMS,
    "schedule": SCHEDULE_PARAMS,
}


# Presets reproduce the two reference recipes of spec section 5 in one key; explicit keys win.
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
    },
}
