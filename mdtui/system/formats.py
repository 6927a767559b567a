"""One formatter per kind of value mdtui shows, so the CLI, the TUI and RESULTS.md agree.

* ``fmt_pct``: an accuracy already in percent (``61.23%``); callers choose the unit and the
  placeholder for an unknown value (a TUI cell drops the ``%`` its header carries). ``fmt_paper``:
  the published figure printed beside a measured one.
* ``format_value`` / ``format_knobs``: a config value as experiments.toml spells it (``true``,
  ``1e-05``, ``[160, 180]``), and the knobs that tell an experiment from its group's baseline.
"""

from __future__ import annotations

from typing import Any


def fmt_pct(value: float | None, *, digits: int = 2, unit: str = "%", missing: str = "-") -> str:
    """``61.23%`` for an accuracy in percent; ``missing`` when it is unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return missing
    return f"{value:.{digits}f}{unit}"


def fmt_paper(figure: float | None) -> str:
    """`` (paper 82.5)`` after a measured figure whose experiment names the published one, else ``""``."""
    return "" if figure is None else f" (paper {figure:g})"


def format_value(value: Any) -> str:
    """A knob value as people write it: ``0.4``, ``1e-05``, ``cosine``, ``true``, ``[160, 180]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def format_knobs(knobs: dict[str, Any]) -> str:
    """``loss.name=refl, loss.threshold=0.4``."""
    return ", ".join(f"{key}={format_value(value)}" for key, value in knobs.items())
