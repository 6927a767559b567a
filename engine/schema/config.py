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
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

# The names and their parameters are the catalogue (engine/schema/catalog.py); re-exported for callers.
from engine.schema.catalog import (  # noqa: F401
    DATASET_NAMES,
    DATASET_PARAMS,
    DOCTOR_PRESETS,
    LOSS_NAMES,
    LOSS_PARAMS,
    MODEL_NAMES,
    NAMED_BLOCKS,
    OPTIM_PARAMS,
    SAMPLER_PARAMS,
    SCHEDULE_PARAMS,
)

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
    # long-tailed subset (spec section 1.2)
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


@dataclass(frozen=True)
class LossConfig:
    name: str = "ce"
    label_smoothing: float = 0.0
    gamma: float = 2.0
    weight: float = 1.0  # constant scale; 0.25 is the reference's "balanced" FL/EFL
    threshold: float = 0.5
    scale_factor: float = 8.0
    mode: Literal["repo", "paper"] = "repo"  # efl/refl: spec section 3.3
    version: Literal["v1", "v2", "v3", "v4"] = "v1"  # refl: spec section 3.5
    beta: float = 0.9999
    base: Literal["softmax", "focal"] = "softmax"
    tau: float = 1.0
    max_m: float = 0.5
    s: float = 30.0
    drw_epoch: int = 160
    drw_beta: float = 0.9999


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
    # epoch 0 (the reference before, spec section 4.3)
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
    grad_scaling: Literal["per_sample", "repo"] = "per_sample"  # spec section 5.8


@dataclass(frozen=True)
class DoctorConfig:
    preset: Literal["none", "official", "fork"] = "none"
    layers: tuple[str, ...] = ("last_conv",)
    weight: float = 10.0
    psi: Literal["abs", "relu", "relu_plus_negall"] = "abs"
    gating: Literal["none", "pos_act"] = "none"
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
            return float(value)
        except OverflowError:  # TOML integers are unbounded; a float is not
            issues.append(Issue(key, f"{value} is too large for a number"))
            return 0.0
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
    if cls is ModelConfig and "name" in data:
        name = data["name"]
        if not isinstance(name, str) or name not in MODEL_NAMES:
            issues.append(
                Issue(
                    f"{prefix}.name",
                    f'unknown model "{name}"{suggest(str(name), MODEL_NAMES)}; valid: {", ".join(MODEL_NAMES)}',
                )
            )
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
    data = dict(data)
    for block in ("model", "data", "loss", "sampler", "optim", "schedule"):
        if isinstance(data.get(block), str):
            data[block] = {"name": data[block]}
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
    out: list[Issue] = []
    if cfg.epochs < 1:
        out.append(Issue("epochs", "must be at least 1"))
    if cfg.batch_size < 1:
        out.append(Issue("batch_size", "must be at least 1"))
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        out.append(Issue("data.val_fraction", "must be in [0, 1)"))
    if cfg.data.imbalance_ratio < 1.0:
        out.append(Issue("data.imbalance_ratio", "must be >= 1 (ρ = n_max / n_min; 1 means balanced)"))
    if cfg.optim.lr < 0:
        out.append(Issue("optim.lr", "must be >= 0"))
    if not 0.0 < cfg.loss.threshold <= 1.0:
        out.append(Issue("loss.threshold", "must be in (0, 1]"))
    for block, cfg_block in (("doctor", cfg.doctor), ("kernels", cfg.kernels)):
        if cfg_block is not None and cfg_block.sift.split == "test" and not cfg_block.allow_test_split:
            out.append(
                Issue(
                    f"{block}.sift.split",
                    "sifting on the test split leaks test data into training; "
                    f"set {block}.allow_test_split = true to do it anyway (the run is then marked leaky)",
                )
            )
    if cfg.doctor is not None and cfg.doctor.mask.combine_with and cfg.doctor.mask.combine_path is None:
        pass  # resolved by the manager before launch; the engine checks the path exists
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready dict (tuples become lists) that ``from_dict`` accepts again.

    A named block keeps only the parameters its name takes: the other fields of the dataclass are
    defaults that ``from_dict`` would reject as "not a parameter of ...".
    """

    def conv(v: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(v):
            catalogue = NAMED_BLOCKS.get(key) if isinstance(cfg, EngineConfig) else None
            taken = catalogue.get(getattr(v, "name", ""), set()) | {"name"} if catalogue else None
            return {
                f.name: conv(getattr(v, f.name))
                for f in dataclasses.fields(v)
                if taken is None or f.name in taken
            }
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
