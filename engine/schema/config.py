"""The engine's typed, frozen configuration: one dataclass per block, and how it reads back.

Standard library only (the manager imports it without torch). The names each block may pick and the
parameters and ranges of each live in the catalogue (``engine.schema.catalog``); turning a plain dict
into an ``EngineConfig``, strictly, is ``engine.schema.validate.from_dict``.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

# The names and their parameters are the catalogue (engine/schema/catalog.py); re-exported for callers.
from engine.schema.catalog import (  # noqa: F401
    BOUNDS,
    DATASET_NAMES,
    DATASET_PARAMS,
    DATASET_SHAPES,
    DOCTOR_PRESETS,
    LIST_LENGTHS,
    LOSS_NAMES,
    LOSS_PARAMS,
    MODEL_MIN_INPUT,
    MODEL_NAMES,
    NAMED_BLOCKS,
    NORMALIZE_CHANNELS,
    OPTIM_PARAMS,
    SAMPLER_PARAMS,
    SCHEDULE_PARAMS,
    bound_problem,
    expand_bare_names,
)

DATA_ROOT_ENV = "MDTUI_DATA_ROOT"


def resolve_data_root(
    root: str | None,
    base: Path,
    *,
    setting: str | None = None,
    env: typing.Mapping[str, str] | None = None,
) -> Path | None:
    """The one rule for where datasets live, used by the manager and the engine alike.

    ``data.root`` when set (relative to ``base``, the experiments file's folder), else
    ``$MDTUI_DATA_ROOT`` (relative to the working directory: one file, several machines), else
    ``setting`` (``[settings] data_root``, relative to ``base``), else None (embedded datasets need
    none). ``~`` and ``$VARS`` are expanded.
    """
    env = os.environ if env is None else env
    for raw, relative_to in ((root, base), (env.get(DATA_ROOT_ENV), Path.cwd()), (setting, base)):
        if raw:
            path = Path(os.path.expandvars(raw)).expanduser()
            return path if path.is_absolute() else relative_to / path
    return None


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet32"
    in_channels: int | None = None  # None: taken from the dataset
    num_classes: int | None = None  # None: taken from the dataset
    # "default": PyTorch's own initialisers (the Model Doctor reference); "kaiming_normal": every
    # Conv2d and Linear weight kaiming_normal_ (fan_in, ReLU gain), as LDAM-DRW's and MiSLAS's CIFAR
    # ResNets do (engine/models/__init__.py apply_init)
    init: Literal["default", "kaiming_normal"] = "default"


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: str | None = None  # None: settings.data_root / MDTUI_DATA_ROOT
    image_size: int | None = None  # None: the dataset's native/reference size
    val_fraction: float = 0.0  # > 0: hold out part of train for best-epoch selection
    augment: Literal["auto", "none", "crop_flip", "crop", "flip"] = "auto"
    normalize: Literal["auto", "cifar10", "cifar100", "imagenet", "inat", "mnist", "none"] = "auto"
    num_workers: int = 2
    in_memory: Literal["auto", "yes", "no"] = "auto"
    # long-tailed subset (reference-spec.md §1.2)
    imbalance_ratio: float = 1.0
    imbalance_profile: Literal["exp", "step", "none"] = "exp"
    imbalance_reverse: bool = False
    subset_seed: int = 0
    # synthetic
    num_classes: int | None = None
    samples_per_class: int = 200
    test_per_class: int = 50
    channels: int = 3
    difficulty: float = 0.5
    # digits
    test_fraction: float = 0.25
    # folders and list files
    class_order: Literal["numeric", "lexicographic"] = "numeric"
    train_dir: str = "train"
    test_dir: str = "test"
    train_list: str | None = None
    eval_list: str | None = None
    mask_dir: str | None = None
    default_mask: str | None = None
    # RandomRotation(d) on the device, after crop/flip; None: auto (15 for balanced cifar100, as the
    # reference's cifar-100 loaders; 0 otherwise: its CIFAR-LT loaders do not rotate)
    rotation_degrees: float | None = None


@dataclass(frozen=True)
class LossConfig:
    name: str = "ce"
    label_smoothing: float = 0.0
    gamma: float = 2.0
    weight: float = 1.0  # constant scale; 0.25 is the reference's "balanced" FL/EFL
    threshold: float = 0.5
    scale_factor: float = 8.0
    mode: Literal["repo", "paper", "v1"] = "repo"  # efl/refl: reference-spec.md §3.3 ("v1": efl only)
    version: Literal["v1", "v2", "v3", "v4"] = "v1"  # refl: reference-spec.md §3.5
    beta: float = 0.9999
    base: Literal["softmax", "focal"] = "softmax"
    tau: float = 1.0
    max_m: float = 0.5
    s: float = 30.0
    drw_epoch: int = 160
    drw_beta: float = 0.9999
    # label_aware_smoothing (MiSLAS): epsilon from smooth_head (most frequent class) to smooth_tail
    smooth_head: float = 0.3
    smooth_tail: float = 0.0
    shape: Literal["concave", "linear", "convex", "exp"] = "concave"
    power: float = 1.0  # shape "exp" only


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "random"
    num_samples_cls: int = 4
    epoch_length: Literal["max_count", "dataset"] = "max_count"


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_bn_and_bias: bool = True
    betas: tuple[float, ...] = (0.9, 0.999)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "cosine"
    warmup_epochs: int = 5
    # "linear": factor (e+1)/W (the reference since 2022-03-11); "repo_e_over_4": e/(W-1), lr 0 in
    # epoch 0 (the reference before, reference-spec.md §4.3)
    warmup: Literal["linear", "repo_e_over_4"] = "linear"
    milestones: tuple[int, ...] = (160, 180)
    factor: float = 0.01
    t_max: int | None = None  # None: the run's epochs
    eta_min: float = 0.0
    step_size: int = 30
    gamma: float = 0.1
    ramp_epochs: int | None = None  # None: the run's epochs


@dataclass(frozen=True)
class SiftConfig:
    split: Literal["train", "test"] = "train"
    transform: Literal["train", "test"] = "test"
    per_class: int = 100
    mode: Literal["high", "low"] = "high"
    batch_size: int = 128


@dataclass(frozen=True)
class MaskConfig:
    source: Literal["grad", "grad_pos_act", "act", "relu_act"] = "grad"
    phi: Literal["abs", "relu"] = "abs"
    threshold: Literal["mean", "minmax", "topk"] = "mean"
    theta: float = 0.2
    topk: int = 10
    combine_with: str | None = None  # experiments.toml: another experiment's name
    combine_path: str | None = None  # resolved by the manager: that experiment's mask artifacts dir
    combine_op: Literal["union", "intersection"] = "union"
    grad_scaling: Literal["per_sample", "repo"] = "per_sample"  # reference-spec.md §5.8


@dataclass(frozen=True)
class DoctorConfig:
    preset: Literal["none", "official", "fork"] = "none"
    layers: tuple[str, ...] = ("last_conv",)
    weight: float = 10.0
    psi: Literal["abs", "relu", "relu_plus_negall"] = "abs"
    gating: Literal["none", "pos_act"] = "none"
    # pos_act gating with noise: gate on the clean activation (default) or, as the fork's hook order
    # does, on the noisy one
    gate_on: Literal["clean", "noisy"] = "clean"
    noise_std: float = 0.0
    spatial_beta: float = 0.0
    init: Literal["from", "scratch"] = "from"
    allow_test_split: bool = False
    sift: SiftConfig = field(default_factory=SiftConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)


@dataclass(frozen=True)
class KernelsConfig:
    sift: SiftConfig = field(default_factory=lambda: SiftConfig(per_class=20, transform="train"))
    grad_wrt: Literal["output", "input"] = "output"
    classes: tuple[int, ...] = ()  # () with tail_classes 0: all classes
    tail_classes: int = 0  # > 0: the k classes with the fewest training images
    layers: tuple[str, ...] = ("all",)
    freeze_layers: tuple[str, ...] = ()
    mode: Literal["per_class", "union"] = "per_class"
    reverse: bool = False
    semantics: Literal["freeze", "repo_zero_grad"] = "freeze"
    allow_test_split: bool = False


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training over several processes (torchrun; one process per GPU, or N CPU ranks)."""

    processes: int = 0  # 0: one process per GPU the run was given (1 on the CPU)
    sync_bn: bool = False  # BatchNorm statistics over the global batch (SyncBatchNorm)


@dataclass(frozen=True)
class MixConfig:
    """Batch mixing for any run (issue #15): mixup (Zhang et al.) or CutMix (Yun et al.)."""

    method: Literal["none", "mixup", "cutmix"] = "none"
    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha), one per batch
    prob: float = 1.0  # fraction of batches mixed


@dataclass(frozen=True)
class DecoupleConfig:
    """Second stage of decoupled training from a ``from`` checkpoint (Kang et al. 2020; MiSLAS)."""

    train: Literal["classifier", "lws", "classifier+lws"] = "classifier"
    reset_classifier: bool = False  # cRT: a freshly initialised classifier
    bn: Literal["frozen", "shift"] = "frozen"  # shift: BN running statistics re-estimated (MiSLAS)
    classifier_lr_factor: float = 1.0  # the classifier's lr = lr * factor (MiSLAS lr_factor)


TAU_SWEEP = tuple(round(0.1 * i, 1) for i in range(21))  # np.linspace(0, 2, 21) of tau_norm.py


@dataclass(frozen=True)
class TauNormConfig:
    """Post-hoc tau-normalisation of a ``from`` checkpoint's classifier: epoch e evaluates taus[e]."""

    taus: tuple[float, ...] = TAU_SWEEP


@dataclass(frozen=True)
class EngineConfig:
    run_id: str = ""
    experiment: str = ""
    seed: int = 0
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 512
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False  # reproducible CUDA kernels (no cuDNN autotuning): bit-identical resume
    nonfinite: Literal["fail", "skip"] = "fail"
    best_compare: Literal["gt", "ge"] = "gt"
    step_events_per_second: float = 10.0
    init_checkpoint: str | None = None  # resolved from `from` by the manager
    cache_dir: str | None = None  # shared by sibling runs (Model Doctor masks); set by the manager
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    doctor: DoctorConfig | None = None
    kernels: KernelsConfig | None = None
    mix: MixConfig = field(default_factory=MixConfig)
    decouple: DecoupleConfig | None = None
    tau_norm: TauNormConfig | None = None
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


_HINTS: dict[type, dict[str, Any]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a config dataclass (cached: validation asks for them per key)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready dict (tuples become lists) that ``from_dict`` accepts again.

    A named block keeps only the parameters its name takes: the other fields of the dataclass are
    defaults that ``from_dict`` would reject as "not a parameter of ...".
    """

    def conv(v: Any, key: str = "") -> Any:
        names = getattr(type(v), "__dataclass_fields__", None)  # dataclasses.fields is slow in bulk
        if names is not None:
            catalogue = NAMED_BLOCKS.get(key) if isinstance(cfg, EngineConfig) else None
            taken = catalogue.get(getattr(v, "name", ""), set()) | {"name"} if catalogue else None
            return {name: conv(getattr(v, name)) for name in names if taken is None or name in taken}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    if not dataclasses.is_dataclass(cfg):
        return conv(cfg)
    return {f.name: conv(getattr(cfg, f.name), f.name) for f in dataclasses.fields(cfg)}


def field_paths(cls: type = EngineConfig, prefix: str = "") -> set[str]:
    """Every dotted key the schema knows (for sweep-key checks and suggestions)."""
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        out.add(dotted)
        tp = type_hints(cls)[f.name]
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)] if get_origin(tp) else []
        target = tp if dataclasses.is_dataclass(tp) else (inner[0] if inner else None)
        if target is not None:
            out |= field_paths(target, dotted)
    return out


def is_leaky(cfg: EngineConfig) -> bool:
    """True when masks were sifted from the test split (results must be flagged)."""
    return any(b is not None and b.sift.split == "test" for b in (cfg.doctor, cfg.kernels))
