"""Model Doctor (reference-spec.md §5): image sift, channel masks, channel/spatial constraint, feature noise."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.plugins import TrainPlugin
    from engine.schema.config import EngineConfig


class DiagnosisError(ValueError):
    """A user mistake in a diagnosis setting (layer key, class list, missing combine mask, empty split)."""


def build_doctor(cfg: EngineConfig) -> TrainPlugin | None:
    """The Model Doctor plugin for a run with a ``doctor`` block, else None."""
    if cfg.doctor is None:
        return None
    from engine.doctor.plugin import DoctorPlugin

    return DoctorPlugin(cfg)
