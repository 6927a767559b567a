"""The engine's registries and the schema's catalogue name the same things.

``engine/schema/catalog.py`` is the one declaration of what can be configured (names, parameters,
ranges; standard library only, so `mdtui validate` can read it without torch). The implementations
register themselves by name in ``engine.losses``, ``engine.models``, ``engine.data`` and
``engine.samplers``. This test fails, saying which side to edit, when a registered name has no
catalogue entry or a catalogue entry has no implementation (docs/extending.md).
"""

from __future__ import annotations

import pytest

from engine.data import DATASETS
from engine.losses import LOSSES
from engine.models import MODELS
from engine.registry import Registry
from engine.samplers import SAMPLERS
from engine.schema.catalog import DATASET_PARAMS, LOSS_PARAMS, MODEL_PARAMS, SAMPLER_PARAMS

PAIRS = {
    "loss": (LOSSES, LOSS_PARAMS, "LOSS_PARAMS", "engine/losses/__init__.py"),
    "model": (MODELS, MODEL_PARAMS, "MODEL_NAMES", "engine/models/__init__.py"),
    "dataset": (DATASETS, DATASET_PARAMS, "DATASET_PARAMS", "engine/data/__init__.py"),
    "sampler": (SAMPLERS, SAMPLER_PARAMS, "SAMPLER_PARAMS", "engine/samplers.py"),
}


def disagreements(kind: str, registry: Registry, catalogue: dict, table: str, imports: str) -> list[str]:
    registered, declared = set(registry.names()), set(catalogue)
    problems = [
        f"{kind} {name!r} is registered but engine/schema/catalog.py {table} does not declare it "
        "(add it there, with its parameters and their BOUNDS)"
        for name in sorted(registered - declared)
    ]
    problems += [
        f"{kind} {name!r} is declared in engine/schema/catalog.py {table} but nothing registers it "
        f"(register its builder with @{kind.upper()}S.register({name!r}) in a module that "
        f"{imports} imports)"
        for name in sorted(declared - registered)
    ]
    return problems


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_every_registered_name_is_declared_in_the_catalogue_and_back(kind: str) -> None:
    problems = disagreements(kind, *PAIRS[kind])
    assert not problems, "\n".join(problems)


def test_a_name_on_one_side_only_is_reported_with_the_place_to_edit() -> None:
    toy: Registry = Registry("loss")
    toy.register("ce")(lambda: None)
    toy.register("toy")(lambda: None)
    problems = disagreements(
        "loss", toy, {"ce": set(), "fl": set()}, "LOSS_PARAMS", "engine/losses/__init__.py"
    )
    assert len(problems) == 2
    assert "'toy' is registered but engine/schema/catalog.py LOSS_PARAMS" in problems[0]
    assert "'fl' is declared" in problems[1] and "engine/losses/__init__.py" in problems[1]


def test_traits_are_read_by_name_and_default_for_unknown_names() -> None:
    toy: Registry = Registry("loss")
    toy.register("cosine", normed_head=True)(lambda: None)
    toy.register("plain")(lambda: None)
    assert toy.trait("cosine", "normed_head") is True
    assert toy.trait("plain", "normed_head", False) is False
    assert toy.trait("missing", "normed_head", False) is False
