"""The rules of experiments.toml as small pure functions: keys, merging, sweep names, checks.

Used by ``mdtui.registry.build``; standard library plus ``engine.schema.config`` (no torch).
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from typing import Any

from engine.schema import config as engine_cfg
from engine.schema.catalog import NAMED_BLOCKS, expand_bare_names
from mdtui.registry.checks import NOTIFY_ON, notify_command_problem, retries_problem
from mdtui.registry.slurm_options import check_slurm_table

MANAGER_KEYS = (
    "extends",
    "sweep",
    "from",
    "group",
    "baseline",
    "tags",
    "description",
    "seeds",
    "seed",
    "gpus",
    "paper",
    "nodes",
    "slurm",
    "notify",
    "notify_on",
    "retries",
)
# the others only make sense per experiment
DEFAULTS_MANAGER_KEYS = ("tags", "seeds", "seed", "gpus", "nodes", "slurm", "retries")
# A child declares its own. `paper` too: a variant is another method, and the parent's published
# figure printed beside the variant's result would be a claim nobody made.
NOT_INHERITED = ("baseline", "sweep", "description", "paper")
# Engine keys that mdtui fills in for each run; the user never writes them.
RESERVED_KEYS = {
    "run_id": "it is set by mdtui for each run",
    "experiment": "it is the experiment's name",
    "init_checkpoint": 'use from = "<experiment>" to start from another experiment\'s best checkpoint',
    "cache_dir": "it is set by mdtui (shared by sibling runs)",
    "seed": None,  # accepted as a manager key (one run with that seed)
}
ENGINE_TOP_KEYS = tuple(f for f in engine_cfg.EngineConfig.__dataclass_fields__ if f not in RESERVED_KEYS)
SWEEPABLE = frozenset(p for p in engine_cfg.field_paths() if p.split(".")[0] not in RESERVED_KEYS)
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:+-]+$")


# --------------------------------------------------------------------------- small pure helpers


def closest(word: str, choices: Any, n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be an experiment name (it becomes a directory name), or None."""
    if not name.strip():
        return "an experiment name cannot be empty"
    if "/" in name or "\\" in name:
        return "experiment names become directory names, so they cannot contain '/' or '\\'"
    if ".." in name:
        return "experiment names become directory names, so they cannot contain '..'"
    if name.startswith("."):
        return "experiment names become directory names; a leading '.' would hide the directory"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "experiment names cannot contain control characters (tabs, newlines, escapes)"
    return None


def format_value(value: Any) -> str:
    """Compact, stable text of a sweep value for expanded names (see mdtui.registry.plan)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if _SAFE_VALUE.match(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def merge(base: dict[str, Any], over: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """Deep merge of tables; lists and scalars replace. A named block whose name changes restarts."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            renamed = (
                top
                and key in NAMED_BLOCKS
                and "name" in old
                and "name" in value
                and old["name"] != value["name"]
            )
            out[key] = copy.deepcopy(value) if renamed else merge(old, value, top=False)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> bool:
    """Set ``a.b.c`` inside nested dicts, creating tables; False when a non-table is in the way."""
    parts = dotted.split(".")
    if len(parts) > 1 and parts[0] in target:  # "loss.gamma" into `loss = "fl"`: the block as a table
        target.update(expand_bare_names({parts[0]: target[parts[0]]}))
    cur = target
    for part in parts[:-1]:
        nxt = cur.get(part)
        if nxt is None:
            nxt = {}
        elif not isinstance(nxt, dict):
            return False
        cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = copy.deepcopy(value)
    return True


def get_dotted(d: dict[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def flatten_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"loss": {"name": "refl"}} -> {"loss.name": "refl"} (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten_keys(value, dotted))
        else:
            out[dotted] = value
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_seed(v: Any) -> bool:
    return _is_int(v) and -(2**63) <= v < 2**63  # the index stores seeds as SQLite integers


def check_manager_value(key: str, value: Any) -> str | None:
    """What is wrong with a manager key's value, or None."""
    if key in ("extends", "from", "description") and not isinstance(value, str):
        return f"expected a string (an experiment name{'' if key != 'description' else ' or text'}), got {value!r}"
    if key == "group" and (not isinstance(value, str) or not value.strip()):
        return f"expected a non-empty string (the heading in RESULTS.md), got {value!r}"
    if key == "baseline" and not isinstance(value, bool):
        return f"expected true or false, got {value!r}"
    if key == "tags" and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
        return f'expected a list of strings, e.g. ["lt", "md"], got {value!r}'
    if key == "seed" and not _is_seed(value):
        return f"expected an integer (64-bit), got {value!r}"
    if key == "seeds":
        if not isinstance(value, list) or not value or not all(_is_seed(s) for s in value):
            return f"expected a non-empty list of integers, e.g. [0, 1, 2], got {value!r}"
        if len(set(value)) != len(value):
            return f"lists the same seed twice: {value!r}"
    if key == "gpus" and (not _is_int(value) or value < 1):
        return f"expected an integer >= 1 (devices per run), got {value!r}"
    if key == "nodes" and (not _is_int(value) or value < 1):
        return f"expected an integer >= 1 (Slurm nodes per run), got {value!r}"
    if key == "slurm":
        problems = check_slurm_table(value, "slurm")[1]
        if problems:
            return "; ".join(f"{k}: {m}" for k, m in problems)
    if key == "paper":
        return check_paper(value)
    if key == "notify":
        return notify_command_problem(value)
    if key == "retries":
        return retries_problem(value)
    if key == "notify_on" and value not in NOTIFY_ON:
        return f'expected "end" (every ending) or "failure" (failed and lost runs only), got {value!r}'
    if key == "sweep" and (not isinstance(value, dict) or not value):
        return 'expected a table of dotted key -> list of values, e.g. { "loss.threshold" = [0.5, 0.4] }'
    return None


# The metrics a paper's figure can be given for (the report's metric names; err1 = 100 - acc1).
PAPER_METRICS = ("acc1", "acc5", "err1", "many", "medium", "few")


def check_paper(value: Any) -> str | None:
    """``paper = { acc1 = 82.5, source = "MiSLAS README, CIFAR-10-LT ρ=100" }``: what is wrong, or None."""
    example = 'e.g. { acc1 = 82.5, source = "MiSLAS README, CIFAR-10-LT ρ=100" }'
    if not isinstance(value, dict):
        return f"expected a table of the paper's figures, {example}, got {value!r}"
    for key, figure in value.items():
        if key == "source":
            if not isinstance(figure, str) or not figure.strip():
                return f"source = {figure!r}: expected the text naming where the figures come from"
        elif key not in PAPER_METRICS:
            hint = closest(key, (*PAPER_METRICS, "source"), n=1)
            near = f' (did you mean "{hint[0]}"?)' if hint else ""
            return f'unknown figure "{key}"{near}; valid: {", ".join(PAPER_METRICS)}, source'
        elif (
            isinstance(figure, bool)
            or not isinstance(figure, (int, float))
            or not math.isfinite(figure)
            or not 0 <= figure <= 100
        ):
            return f"{key} = {figure!r}: expected a percentage between 0 and 100"
    if not any(k in PAPER_METRICS for k in value):
        return f"names no figure; give at least one of {', '.join(PAPER_METRICS)}, {example}"
    return None
