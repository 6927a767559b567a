"""validate-passes <=> the config builds: every range of the catalogue, walked at its boundaries.

For every number the catalogue bounds (engine/schema/catalog.py ``BOUNDS`` / ``NAME_BOUNDS``), for every
implementation whose name takes it (every loss, sampler, schedule, optimiser, model, dataset), this
builds configurations with values just inside, on and just outside each end of the range (plus inf
and nan for floats) and asserts that ``engine.schema.validate.from_dict`` -- what ``mdtui validate``
runs -- accepts exactly the values the engine's real builders build on tiny inputs:

* losses: ``build_loss`` + a forward/backward pass whose loss must be finite;
* samplers: ``build_sampler`` + one epoch of indices;
* schedules: ``lr_at`` for every epoch (finite, >= 0);
* optimisers: ``build_optimizer`` on a tiny model + one step (finite parameters);
* models: ``build_model`` + a forward pass at the image size (each model's smallest input too);
* datasets: ``synthetic`` and ``digits`` (embedded) are built for real by ``build_data``; the datasets
  that need files on disk (cifar10/100, stl10, image_folder, oltr, image_mask) are checked at config
  level only: the range check ``build_data`` starts with, the presentation (image size,
  normalisation) and the long-tail counts, all of which happen before any file is read.

A failure names the case and both sides' messages, so a range added to one side only shows at once.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from engine.data.base import DataError
from engine.data.build import build_data
from engine.data.longtail import longtail_counts
from engine.data.presets import CIFAR_STYLE, resolve_presentation
from engine.losses import build_loss, needs_normed_head
from engine.models import MODELS, build_model
from engine.optim import build_optimizer
from engine.samplers import build_sampler
from engine.schedules import lr_at
from engine.schema.catalog import (
    BOUNDS,
    DATASET_SHAPES,
    MODEL_MIN_INPUT,
    NAME_BOUNDS,
    NAMED_BLOCKS,
    Bound,
    bound_of,
)
from engine.schema.config import EngineConfig, ModelConfig
from engine.schema.validate import ConfigError, from_dict, require_block_in_range

EMBEDDED = ("synthetic", "digits")
BLOCKS = ("model", "data", "loss", "sampler", "optim", "schedule")
COUNTS = [5, 3, 1]
# A small run every case starts from: three classes of 8 px synthetic images.
BASE: dict[str, Any] = {
    "epochs": 4,
    "model": {"name": "resnet32"},
    "data": {
        "name": "synthetic",
        "num_classes": 3,
        "samples_per_class": 6,
        "test_per_class": 2,
        "image_size": 8,
    },
}


@dataclass(frozen=True)
class Case:
    block: str
    name: str
    param: str | None  # None: the name with its defaults
    value: Any = None

    def __str__(self) -> str:
        return f"{self.block}:{self.name}" + (f".{self.param}={self.value!r}" if self.param else "")


def _field_type(block: str, param: str) -> Any:
    cls = type(getattr(EngineConfig(), block))
    return typing.get_type_hints(cls)[param]


def _is_int(block: str, param: str) -> bool:
    tp = _field_type(block, param)
    return int in (tp, *typing.get_args(tp))


def boundary_values(bound: Bound, integer: bool) -> list[Any]:
    """Just outside, on and just inside each finite end of ``bound`` (and inf/nan for floats)."""
    step = 1 if integer else 1e-3
    values: list[Any] = []
    for end in (bound.low, bound.high):
        if end is not None:
            values += [end - step, end, end + step]
    if integer:
        return sorted({int(v) for v in values})
    return sorted({float(v) for v in values}) + [math.inf, -math.inf, math.nan]


def _names(block: str, param: str) -> list[str]:
    return [name for name, params in NAMED_BLOCKS[block].items() if param in params]


def _cases() -> list[Case]:
    cases = [Case(block, name, None) for block in BLOCKS for name in NAMED_BLOCKS[block]]
    keys = {key for key in BOUNDS} | {key for key, _name in NAME_BOUNDS}
    for key in sorted(keys):
        block, _, param = key.rpartition(".")
        if block not in BLOCKS:
            continue  # top-level and non-named keys: see test_top_level_ranges_are_validated
        for name in _names(block, param):
            bound = bound_of(key, name)
            assert bound is not None
            cases += [Case(block, name, param, v) for v in boundary_values(bound, _is_int(block, param))]
    for name, smallest in MODEL_MIN_INPUT.items():  # each model's smallest input, as data.image_size
        cases += [Case("model", name, "image_size", side) for side in {max(smallest - 1, 1), smallest}]
    return cases


CASES = _cases()


# --------------------------------------------------------------------------- the two sides


def _as_written(case: Case) -> dict[str, Any]:
    """The case as experiments.toml would hold it."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    block = dict(data.get(case.block, {}))
    block["name"] = case.name
    if case.block == "model" and case.param == "image_size":
        data["data"] = {**data["data"], "image_size": case.value}
    elif case.param == "betas":
        block["betas"] = [case.value, 0.999]
    elif case.param == "milestones":
        block["milestones"] = [case.value]
    elif case.param is not None:
        block[case.param] = case.value
    if case.block == "data" and case.name != "synthetic":
        block = {k: v for k, v in block.items() if k in NAMED_BLOCKS["data"][case.name] | {"name"}}
    data[case.block] = block
    return data


def _unvalidated(case: Case) -> EngineConfig:
    """The same configuration as an EngineConfig, built without the schema's checks."""
    cfg = EngineConfig()
    for key, value in _as_written(case).items():
        if isinstance(value, dict):
            cls = type(getattr(cfg, key))
            value = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        cfg = dataclasses.replace(cfg, **{key: value})
    return cfg


def validate(case: Case) -> str | None:
    try:
        from_dict(_as_written(case))
    except ConfigError as exc:
        return str(exc)
    return None


def build(case: Case) -> str | None:
    cfg = _unvalidated(case)
    torch.manual_seed(0)
    try:
        BUILDERS[case.block](cfg)
    except (ValueError, DataError, ZeroDivisionError, RuntimeError, AssertionError, OverflowError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _build_loss(cfg: EngineConfig) -> None:
    loss = build_loss(cfg.loss, COUNTS, len(COUNTS), cfg.epochs)
    raw = torch.randn(6, len(COUNTS), requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 0, 1])
    for epoch in range(cfg.epochs):
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(epoch)
        logits = torch.tanh(raw) if needs_normed_head(cfg.loss) else raw  # LDAM: cosine logits
        value = loss(logits, labels)
        value.backward()
        assert torch.isfinite(value), f"loss {value}"


def _build_sampler(cfg: EngineConfig) -> None:
    sampler = build_sampler(cfg.sampler, torch.tensor([0] * 5 + [1] * 3 + [2]), len(COUNTS))
    indices = sampler.epoch_indices(torch.Generator().manual_seed(0))
    assert len(indices) == len(sampler) > 0


def _build_schedule(cfg: EngineConfig) -> None:
    for epoch in range(cfg.epochs + 2):
        lr = lr_at(epoch, cfg)
        assert math.isfinite(lr) and lr >= 0, f"lr {lr} at epoch {epoch}"


def _build_optim(cfg: EngineConfig) -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    optimizer = build_optimizer(model, cfg.optim)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 2)).square().mean().backward()
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _build_model(cfg: EngineConfig) -> None:
    # On the meta device: the models' own construction and shape checks, without filling weights
    # (resnet152 and vgg16 take seconds to initialise on this CPU, a tenth of that on meta).
    side = cfg.data.image_size
    channels = 3 if cfg.model.in_channels is None else cfg.model.in_channels
    classes = len(COUNTS) if cfg.model.num_classes is None else cfg.model.num_classes
    with torch.device("meta"):
        model = build_model(
            cfg.model, channels, classes, normed_head=needs_normed_head(cfg.loss), image_size=side
        ).eval()
        out = model(torch.zeros(1, channels, side, side))
    assert out.shape == (1, classes)


def _build_data(cfg: EngineConfig) -> None:
    if cfg.data.name in EMBEDDED:
        bundle = build_data(cfg)
        assert len(bundle.train.labels) > 0 and len(bundle.test.labels) > 0, "an empty split"
        assert cfg.data.val_fraction == 0 or len(bundle.val.labels) > 0, "an empty val split"
        return
    # Files needed: everything build_data does before reading them.
    require_block_in_range(cfg.data, "data", DataError)
    native, channels = DATASET_SHAPES[cfg.data.name]
    resolve_presentation(cfg.data, CIFAR_STYLE, channels or 3, native or 32)
    if "imbalance_ratio" in NAMED_BLOCKS["data"][cfg.data.name]:
        counts = longtail_counts(500, 10, cfg.data.imbalance_ratio, cfg.data.imbalance_profile)
        assert min(counts) >= 1


BUILDERS = {
    "loss": _build_loss,
    "sampler": _build_sampler,
    "schedule": _build_schedule,
    "optim": _build_optim,
    "model": _build_model,
    "data": _build_data,
}


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", CASES, ids=str)
def test_validate_and_build_agree(case: Case) -> None:
    if case.block == "data" and case.name == "digits":
        pytest.importorskip("sklearn")
    rejected, failed = validate(case), build(case)
    assert (rejected is None) == (failed is None), (
        f"{case}: validate {'accepts' if rejected is None else 'rejects (' + rejected + ')'} but build "
        f"{'succeeds' if failed is None else 'fails (' + failed + ')'}"
    )


def test_every_catalogue_entry_is_walked() -> None:
    walked = {(c.block, c.name) for c in CASES}
    assert walked == {(block, name) for block in BLOCKS for name in NAMED_BLOCKS[block]}
    bounded = {(c.block, c.param) for c in CASES if c.param}
    for key in BOUNDS:
        block, _, param = key.rpartition(".")
        if block in BLOCKS and _names(block, param):
            assert (block, param) in bounded, key
    assert len(CASES) > 400


def test_catalogue_minimum_input_sizes_are_the_models_own() -> None:
    assert set(MODEL_MIN_INPUT) == set(MODELS.names())
    for name, smallest in MODEL_MIN_INPUT.items():
        with torch.device("meta"):
            model = build_model(ModelConfig(name=name), 3, 2, image_size=max(smallest, 32))
        assert model.min_input_size == smallest, name


@pytest.mark.parametrize(
    ("key", "bad", "good"),
    [
        ("epochs", 0, 1),
        ("batch_size", 0, 1),
        ("eval_batch_size", 0, 1),
        ("step_events_per_second", -0.5, 0.0),
    ],
)
def test_top_level_ranges_are_validated(key: str, bad: Any, good: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        from_dict({key: bad})
    from_dict({key: good})
