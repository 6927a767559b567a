"""The engine's typed, frozen configuration and its strict validator.

Standard library only, so the manager validates experiments.toml with exactly the rules the engine
applies (no drift between "validate" and "run"), without importing torch.

Every block that picks an implementation by ``name`` (model, data, loss, sampler, optim, schedule)
lists, per name, the parameters that name accepts: a key that the chosen name does not use is an
error, not a silently ignored typo. The implementations live in the registries of ``engine.models``,
``engine.losses``, ``engine.data``; a test checks that they and these tables name the same things.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

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


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Issue:
    """One problem with a configuration: the dotted key it concerns and what is wrong."""

    key: str
    message: str


class ConfigError(ValueError):
    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{i.key}: {i.message}" if i.key else i.message for i in issues))


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"list of {_type_name(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f'string "{value}"'
    return f"{type(value).__name__} {value!r}"


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _coerce(value: Any, tp: Any, key: str, issues: list[Issue]) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        # `doctor = {}` style optional blocks and `str | None` fields: try the one non-None type.
        return _coerce(value, args[0], key, issues)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or isinstance(value, bool):
            choices = ", ".join(repr(a) for a in allowed)
            hint = suggest(str(value), [str(a) for a in allowed]) if isinstance(value, str) else ""
            issues.append(Issue(key, f"{_describe(value)} is not one of {choices}{hint}"))
            return allowed[0]
        return value
    if origin is tuple:
        (item_tp, *_rest) = get_args(tp)
        items = value if isinstance(value, list) else [value] if not isinstance(value, dict) else None
        if items is None:
            issues.append(Issue(key, f"expected {_type_name(tp)}, got {_describe(value)}"))
            return ()
        return tuple(_coerce(v, item_tp, f"{key}[{i}]", issues) for i, v in enumerate(items))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            issues.append(Issue(key, f"expected a table, got {_describe(value)}"))
            return tp()
        return _build(tp, value, key, issues)
    if tp is bool:
        if not isinstance(value, bool):
            issues.append(Issue(key, f"expected true or false, got {_describe(value)}"))
            return False
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                issues.append(Issue(key, f"expected an integer, got {_describe(value)}"))
                return 0
            value = int(value)
        if not -(2**63) <= value < 2**63:  # TOML integers are unbounded; the index stores int64
            issues.append(Issue(key, f"{value} is out of range (a 64-bit integer)"))
            return 0
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            issues.append(Issue(key, f"expected a number, got {_describe(value)}"))
            return 0.0
        try:
            number = float(value)
        except OverflowError:  # TOML integers are unbounded; a float is not
            issues.append(Issue(key, f"{value} is too large for a number"))
            return 0.0
        if not math.isfinite(number):  # TOML allows inf and nan; no parameter means them
            issues.append(Issue(key, f"must be a finite number, got {value}"))
            return 0.0
        return number
    if tp is str:
        if isinstance(value, int) and not isinstance(value, bool) and "layer" in key.split(".")[-1]:
            return str(value)  # reference integer layer keys: layers = [-1] or [20, 21]
        if not isinstance(value, str):
            issues.append(Issue(key, f"expected a string, got {_describe(value)}"))
            return ""
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str, issues: list[Issue]) -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    allowed_params: set[str] | None = None
    block = prefix.rsplit(".", 1)[-1]
    if block in NAMED_BLOCKS and "name" in names and prefix == block:
        catalogue = NAMED_BLOCKS[block]
        name = data.get("name", cls().name)
        if not isinstance(name, str) or name not in catalogue:
            shown = name if isinstance(name, str) else _describe(name)
            issues.append(
                Issue(
                    f"{prefix}.name",
                    f'unknown {block} "{shown}"{suggest(str(shown), catalogue)}; '
                    f"valid: {', '.join(catalogue)}",
                )
            )
        else:
            allowed_params = catalogue[name] | {"name"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            issues.append(Issue(dotted, f'unknown key "{key}"{suggest(key, names)}'))
            continue
        if allowed_params is not None and key not in allowed_params:
            issues.append(
                Issue(
                    dotted,
                    f'"{key}" is not a parameter of {block} "{data.get("name")}" '
                    f"(it takes: {', '.join(sorted(allowed_params - {'name'})) or 'no parameters'})",
                )
            )
            continue
        kwargs[key] = _coerce(value, hints[key], dotted, issues)
    return cls(**kwargs)


def _apply_doctor_preset(doctor: dict[str, Any], issues: list[Issue]) -> dict[str, Any]:
    preset = doctor.get("preset", "none")
    if not isinstance(preset, str) or preset not in DOCTOR_PRESETS:  # a wrong type is reported by _build
        return doctor
    merged = dict(DOCTOR_PRESETS[preset])
    for key, value in doctor.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def from_dict(data: dict[str, Any]) -> EngineConfig:
    """Validate a plain dict (from JSON/TOML) into an ``EngineConfig``; raise ``ConfigError``.

    Blocks that pick an implementation may be given as a bare name: ``model = "resnet32"``.
    """
    issues: list[Issue] = []
    data = expand_bare_names(data)
    if isinstance(data.get("doctor"), dict):
        data["doctor"] = _apply_doctor_preset(data["doctor"], issues)
    if isinstance(data.get("kernels"), dict) and isinstance(data["kernels"].get("sift"), dict):
        data["kernels"] = {
            **data["kernels"],
            "sift": {"per_class": 20, "transform": "train", **data["kernels"]["sift"]},
        }
    cfg = _build(EngineConfig, data, "", issues)
    issues.extend(_semantic_issues(cfg))
    if issues:
        raise ConfigError(issues)
    return cfg


def _semantic_issues(cfg: EngineConfig) -> list[Issue]:
    out = _range_issues(cfg) + _shape_issues(cfg) + _method_issues(cfg) + _compile_issues(cfg)
    for block, cfg_block in (("doctor", cfg.doctor), ("kernels", cfg.kernels)):
        if cfg_block is not None and cfg_block.sift.split == "test" and not cfg_block.allow_test_split:
            out.append(
                Issue(
                    f"{block}.sift.split",
                    "sifting on the test split leaks test data into training; "
                    f"set {block}.allow_test_split = true to do it anyway (the run is then marked leaky)",
                )
            )
    return out


def _compile_issues(cfg: EngineConfig) -> list[Issue]:
    """torch.compile's graphs have no double backward, which Model Doctor's channel loss needs."""
    if cfg.compile and cfg.doctor is not None:
        return [
            Issue(
                "compile",
                "compile = true cannot train with doctor: the channel loss differentiates gradients "
                "(double backward), which compiled graphs do not support; set compile = false for this "
                "experiment",
            )
        ]
    return []


def _method_issues(cfg: EngineConfig) -> list[Issue]:
    """The long-tail methods' cross-key rules (issue #15)."""
    out: list[Issue] = []
    if cfg.tau_norm is not None:
        taus = cfg.tau_norm.taus
        if not taus:
            out.append(Issue("tau_norm.taus", "needs at least one tau"))
        elif cfg.epochs != len(taus):
            out.append(
                Issue(
                    "epochs",
                    f"tau_norm evaluates one tau per epoch and trains nothing: set epochs = {len(taus)} "
                    f"(the number of tau_norm.taus), got {cfg.epochs}",
                )
            )
        if cfg.decouple is not None:
            out.append(Issue("tau_norm", "tau_norm trains nothing; it cannot be combined with decouple"))
    if cfg.loss.name == "refl" and cfg.loss.mode == "v1":
        out.append(Issue("loss.mode", '"v1" is an EFL form (reference-spec.md §3.3); refl takes "repo" or "paper"'))
    return out


# block ("" for the top level) -> [(dotted key, parameter)] of the numbers it bounds, in key order.
_BOUNDED: dict[str, list[tuple[str, str]]] = {}
for _key in sorted(BOUNDS.keys() | LIST_LENGTHS.keys()):
    _block, _, _param = _key.rpartition(".")
    _BOUNDED.setdefault(_block, []).append((_key, _param))


def _range_issues(cfg: EngineConfig) -> list[Issue]:
    """Every number against its catalogue range (the top-level keys and each block's)."""
    return [
        issue
        for block in _BOUNDED
        if (owner := getattr(cfg, block) if block else cfg) is not None  # an optional block left out
        for issue in block_range_issues(owner, block)
    ]


def block_range_issues(owner: Any, block: str) -> list[Issue]:
    """The range problems of one block (``""``: the top-level keys); a named block's parameters are
    checked only when its name takes them (the others are defaults nobody reads)."""
    out: list[Issue] = []
    name = getattr(owner, "name", None) if block in NAMED_BLOCKS else None
    taken = NAMED_BLOCKS[block].get(name or "", set()) if name is not None else None
    for key, param in _BOUNDED.get(block, ()):
        if taken is not None and param not in taken:
            continue
        value = getattr(owner, param)
        if isinstance(value, tuple):
            want = LIST_LENGTHS.get(key)
            if want is not None and len(value) != want:
                out.append(Issue(key, f"must be a list of exactly {want} numbers, got {len(value)}"))
            out.extend(
                Issue(f"{key}[{i}]", problem)
                for i, item in enumerate(value)
                if (problem := bound_problem(key, item, name))
            )
        elif value is not None and (problem := bound_problem(key, value, name)):
            out.append(Issue(key, problem))
    return out


def require_block_in_range(owner: Any, block: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` for a block whose numbers lie outside the catalogue's ranges.

    For the engine's builders: a validated config always passes, so they keep no ranges of their own
    and a block built by hand (tests, plugins) fails with the message ``mdtui validate`` would give.
    """
    issues = block_range_issues(owner, block)
    if issues:
        raise error("; ".join(f"{i.key} {i.message}" for i in issues))


def _shape_issues(cfg: EngineConfig) -> list[Issue]:
    """Checks across blocks: the model's smallest input, the normalisation's channels."""
    out: list[Issue] = []
    native, channels = DATASET_SHAPES.get(cfg.data.name, (None, None))
    if cfg.data.name == "synthetic":
        channels = cfg.data.channels
    side = cfg.data.image_size or native
    smallest = MODEL_MIN_INPUT.get(cfg.model.name, 1)
    if side is not None and side < smallest:
        shown = "data.image_size" if cfg.data.image_size else f"{cfg.data.name}'s default size"
        out.append(
            Issue(
                "data.image_size",
                f"model {cfg.model.name} needs inputs of at least {smallest} px, got {side} px ({shown}); "
                f"set data.image_size >= {smallest}",
            )
        )
    wanted = NORMALIZE_CHANNELS.get(cfg.data.normalize, 1)
    if channels is not None and wanted != 1 and wanted != channels:
        out.append(
            Issue(
                "data.normalize",
                f'"{cfg.data.normalize}" is for {wanted}-channel images but {cfg.data.name} has {channels}; '
                'choose "auto", "mnist" or "none"',
            )
        )
    return out


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
        tp = _hints(cls)[f.name]
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)] if get_origin(tp) else []
        target = tp if dataclasses.is_dataclass(tp) else (inner[0] if inner else None)
        if target is not None:
            out |= field_paths(target, dotted)
    return out


def is_leaky(cfg: EngineConfig) -> bool:
    """True when masks were sifted from the test split (results must be flagged)."""
    return any(b is not None and b.sift.split == "test" for b in (cfg.doctor, cfg.kernels))
