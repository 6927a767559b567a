"""A name -> builder registry (models, losses, datasets, samplers), in the timm style.

A registration may carry *traits*: facts about the implementation that other parts of the engine
ask by name (``@LOSSES.register("ldam", normed_head=True)``), so they are declared once, next to
the code, instead of in a list elsewhere. The names and parameters a registry must provide are
declared in ``engine/schema/catalog.py``; tests/engine/schema/test_registry_catalog.py checks that the two
agree (docs/extending.md).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", bound=Callable[..., object])


class Registry(Generic[T]):
    """Builders registered by name; unknown names fail with the valid ones listed."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._traits: dict[str, dict[str, object]] = {}

    def register(self, name: str, **traits: object) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = fn
            self._traits[name] = dict(traits)
            return fn

        return decorator

    def trait(self, name: str, key: str, default: object = None) -> object:
        """The trait ``key`` that ``name`` was registered with, else ``default`` (unknown names too)."""
        return self._traits.get(name, {}).get(key, default)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise KeyError(f'unknown {self.kind} "{name}"{hint}; valid: {", ".join(self.names())}') from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
