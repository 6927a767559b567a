"""Pre-flight: is an experiment's dataset where its runs will look? By paths only, never by loading.

A run whose data is missing used to be created, fail after seconds in the engine and leave an
"Incomplete runs" line in RESULTS.md every time it was tried. Every place that creates or queues
runs asks ``data_problem`` first and refuses with its message (what is missing, where, and the
command or path that fixes it), so no run directory, index row or results line exists for it.
``mdtui validate --data`` asks it for every experiment of the file.

The paths come from ``engine.schema.datasets`` (the same table the engine's downloader uses and a
test holds against ``engine.data``); an embedded dataset needs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.schema.datasets import DOWNLOADS, dataset_name, how_to_get, missing, needs
from mdtui.registry.spec import DATA_ROOT_ENV, Experiment, Settings

SHOWN_PATHS = 3  # a message names this many missing paths, then "and N more"
# "off": trust that the data exists where runs execute (a data root only Slurm's compute nodes see).
CHECK_ENV = "MDTUI_DATA_CHECK"


@dataclass(frozen=True)
class DataProblem:
    """Why an experiment cannot run yet; ``message`` says what, where and how to fix it."""

    experiment: str
    dataset: str
    root: Path | None
    missing: tuple[Path, ...]
    message: str


def data_root_of(exp: Experiment, settings: Settings) -> Path | None:
    """Where ``exp``'s runs will look: its ``data.root`` (already absolute: registry.build), else
    the plan's data root (``MDTUI_DATA_ROOT`` when set, else ``[settings] data_root``)."""
    data = exp.config.get("data")
    own = data.get("root") if isinstance(data, dict) else None
    return Path(own).expanduser() if own else settings.data_root


def data_problem(exp: Experiment, settings: Settings) -> DataProblem | None:
    """None when ``exp``'s dataset is in place (or embedded); else what is missing and the fix."""
    if os.environ.get(CHECK_ENV, "").strip().lower() == "off":
        return None
    data: Any = exp.config.get("data")
    name = dataset_name(data)
    root = data_root_of(exp, settings)
    if needs(data, root) is None:
        return None
    gone = tuple(n.path for n in missing(data, root))
    if not gone:
        return None
    title = DOWNLOADS[name].title if name in DOWNLOADS else name
    if root is None:
        message = (
            f"{exp.name} needs {title}, but no data root is set: set {DATA_ROOT_ENV}=DIR (or "
            f"data_root in [settings] of {settings.path.name}), then {_fix(data)}"
        )
    else:
        listed = _summarised(gone)
        shown = ", ".join(listed[:SHOWN_PATHS])
        more = f" and {len(listed) - SHOWN_PATHS} more" if len(listed) > SHOWN_PATHS else ""
        message = f"{exp.name} needs {title} under the data root {root}: missing {shown}{more}; {_fix(data)}"
    return DataProblem(exp.name, name, root, gone, message)


def _summarised(paths: tuple[Path, ...]) -> list[str]:
    """Missing files of a folder that is missing altogether read as that folder (``.../``)."""
    out: list[str] = []
    for path in paths:
        folder = path.parent
        whole = not folder.exists() and sum(p.parent == folder for p in paths) > 1
        shown = f"{folder}/" if whole else str(path)
        if shown not in out:
            out.append(shown)
    return out


def _fix(data: Any) -> str:
    return how_to_get(data)
