"""The strict validator: a plain dict (experiments.toml, config.json) -> an ``EngineConfig``.

Standard library only, so the manager validates experiments.toml with exactly the rules the engine
applies (no drift between "validate" and "run"), without importing torch.

Every block that picks an implementation by ``name`` (model, data, loss, sampler, optim, schedule)
lists, per name, the parameters that name accepts (``engine.schema.catalog``): a key that the chosen
name does not use is an error, not a silently ignored typo. Every problem is collected as an
``Issue`` (dotted key, message) and raised together in one ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from engine.schema.catalog import (
    BOUNDS,
    DATASET_SHAPES,
    DOCTOR_PRESETS,
    LIST_LENGTHS,
    MODEL_MIN_INPUT,
    NAMED_BLOCKS,
    NORMALIZE_CHANNELS,
    bound_problem,
    expand_bare_names,
)
from engine.schema.config import EngineConfig, type_hints


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


def _coerce(value: Any, tp: Any, key: str, issues: list[Issue]) -> Any:
    """``value`` as the field type ``tp``; a mismatch adds an ``Issue`` and gives a placeholder."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        # `doctor = {}` style optional blocks and `str | None` fields: try the one non-None type.
        return _coerce(value, next(a for a in get_args(tp) if a is not type(None)), key, issues)
    if origin is Literal:
        return _coerce_choice(value, get_args(tp), key, issues)
    if origin is tuple:
        return _coerce_list(value, tp, key, issues)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            issues.append(Issue(key, f"expected a table, got {_describe(value)}"))
            return tp()
        return _build(tp, value, key, issues)
    scalar = _SCALARS.get(tp)
    return value if scalar is None else scalar(value, key, issues)


def _coerce_choice(value: Any, allowed: tuple[Any, ...], key: str, issues: list[Issue]) -> Any:
    if value in allowed and not isinstance(value, bool):
        return value
    choices = ", ".join(repr(a) for a in allowed)
    hint = suggest(str(value), [str(a) for a in allowed]) if isinstance(value, str) else ""
    issues.append(Issue(key, f"{_describe(value)} is not one of {choices}{hint}"))
    return allowed[0]


def _coerce_list(value: Any, tp: Any, key: str, issues: list[Issue]) -> tuple[Any, ...]:
    """A TOML list (or one bare item, as ``layers = "last_conv"``) as a tuple of the item type."""
    (item_tp, *_rest) = get_args(tp)
    items = value if isinstance(value, list) else [value] if not isinstance(value, dict) else None
    if items is None:
        issues.append(Issue(key, f"expected {_type_name(tp)}, got {_describe(value)}"))
        return ()
    return tuple(_coerce(v, item_tp, f"{key}[{i}]", issues) for i, v in enumerate(items))


def _coerce_bool(value: Any, key: str, issues: list[Issue]) -> bool:
    if not isinstance(value, bool):
        issues.append(Issue(key, f"expected true or false, got {_describe(value)}"))
        return False
    return value


def _coerce_int(value: Any, key: str, issues: list[Issue]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            issues.append(Issue(key, f"expected an integer, got {_describe(value)}"))
            return 0
        value = int(value)
    if not -(2**63) <= value < 2**63:  # TOML integers are unbounded; the index stores int64
        issues.append(Issue(key, f"{value} is out of range (a 64-bit integer)"))
        return 0
    return value


def _coerce_float(value: Any, key: str, issues: list[Issue]) -> float:
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


def _coerce_str(value: Any, key: str, issues: list[Issue]) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and "layer" in key.split(".")[-1]:
        return str(value)  # reference integer layer keys: layers = [-1] or [20, 21]
    if not isinstance(value, str):
        issues.append(Issue(key, f"expected a string, got {_describe(value)}"))
        return ""
    return value


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _build(cls: type, data: dict[str, Any], prefix: str, issues: list[Issue]) -> Any:
    hints = type_hints(cls)
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


# Why a kernel run has one process: said by validation (here and in mdtui's registry, which knows the
# GPUs a run gets) and, for a run started on several devices all the same, by the engine at start.
KERNELS_ONE_PROCESS = (
    "per-class kernel fine-tuning (kernels) splits batches by class, which differs between ranks, so it "
    "runs in one process"
)


def _method_issues(cfg: EngineConfig) -> list[Issue]:
    """The long-tail methods' cross-key rules (issue #15)."""
    out: list[Issue] = []
    if cfg.kernels is not None and cfg.distributed.processes > 1:
        out.append(Issue("distributed.processes", f"{KERNELS_ONE_PROCESS}: set distributed.processes = 1"))
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
        out.append(
            Issue("loss.mode", '"v1" is an EFL form (reference-spec.md §3.3); refl takes "repo" or "paper"')
        )
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
