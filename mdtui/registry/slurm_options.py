"""The Slurm options of experiments.toml: ``[settings.slurm]`` and an experiment's ``slurm = {...}``.

Both tables take the same keys; an experiment's table is merged over the settings' one (its keys
win). Each key is checked on its own so a mistake is reported with its dotted key and line, like
every other key of the file. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from mdtui.registry.checks import check_table
from mdtui.system.slurm import parse_duration  # Slurm's one time parser: --time as sbatch reads it

LAUNCHERS = ("local", "slurm")
DEFAULT_SIGNAL_SECONDS = 120
# Slurm's --time forms: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)


@dataclass(frozen=True)
class SlurmOptions:
    """What a run's sbatch script asks of Slurm (None: Slurm's / the partition's default)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # as Slurm reads it, e.g. "1-00:00:00" or "90" (minutes)
    cpus_per_gpu: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None  # e.g. "32G"
    constraint: str | None = None
    extra: tuple[str, ...] = ()  # more sbatch arguments, e.g. ["--exclusive"]
    setup: tuple[str, ...] = ()  # shell lines run before the supervisor (module load, venv)
    signal_seconds: int = DEFAULT_SIGNAL_SECONDS  # the warning SIGTERM before the time limit
    # the interpreter on the nodes (with mdtui and torch installed); None: the one mdtui runs under
    python: str | None = None

    def merged(self, over: dict[str, Any]) -> SlurmOptions:
        """These options with an experiment's (already checked) ``slurm = {...}`` over them."""
        values = dict(over)
        # the two CPU requests exclude each other in sbatch: the experiment's choice replaces ours
        if "cpus_per_gpu" in values:
            values.setdefault("cpus_per_task", None)
        if "cpus_per_task" in values:
            values.setdefault("cpus_per_gpu", None)
        for key in ("extra", "setup"):
            if key in values:
                values[key] = tuple(values[key])
        return replace(self, **values)

    def time_limit_seconds(self) -> int | None:
        return parse_duration(self.time) if self.time is not None else None


SLURM_KEYS = tuple(f.name for f in fields(SlurmOptions))
# the least training time a job should have before Slurm's warning signal: less, and the run may stop
# before its first epoch (Slurm may also send the warning up to a minute early)
MIN_TRAINING_SECONDS = 60


def time_limit_warning(options: SlurmOptions, where: str) -> str | None:
    """Why ``options``' time limit leaves a run too little time before the warning, else None."""
    limit = options.time_limit_seconds()
    if limit is None or options.signal_seconds <= 0:
        return None
    if limit >= options.signal_seconds + MIN_TRAINING_SECONDS:
        return None
    return (
        f"{where}: time = {options.time!r} ({limit} s) with signal_seconds = {options.signal_seconds}: "
        f"Slurm's warning signal comes {max(0, limit - options.signal_seconds)} s after the start, and "
        f"the run stops there (resumable). Give it a time limit of at least "
        f"{options.signal_seconds + MIN_TRAINING_SECONDS} s, or a smaller signal_seconds"
    )


def time_limit_warnings(base: SlurmOptions, experiments: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """``time_limit_warning`` for ``[settings.slurm]`` and for each experiment's own ``slurm`` table."""
    found = [w for w in (time_limit_warning(base, "[settings.slurm]"),) if w]
    for name, over in experiments:
        if over and ("time" in over or "signal_seconds" in over):
            warning = time_limit_warning(base.merged(over), f'experiment "{name}", key slurm')
            if warning:
                found.append(warning)
    return found


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() and "\n" not in v else None


def _check_time(v: Any) -> str | None:
    if _is_int(v) and v >= 1:
        return str(v)  # minutes, as sbatch reads a bare number
    if isinstance(v, str) and (secs := parse_duration(v)) is not None and secs > 0:
        return v.strip()
    return None


def _check_mem(v: Any) -> str | None:
    if _is_int(v) and v >= 1:
        return f"{v}M"
    return v.strip() if isinstance(v, str) and _MEM.match(v.strip()) else None


def _lines(v: Any, *, options: bool) -> tuple[str, ...] | None:
    if not isinstance(v, list) or not all(isinstance(x, str) and "\n" not in x for x in v):
        return None
    if options and not all(x.startswith("-") for x in v):
        return None
    return tuple(v)


# key -> (check returning the parsed value or None, what a right value looks like)
CHECKS: dict[str, tuple[Any, str]] = {
    "partition": (_text, 'a partition name, e.g. "gpu"'),
    "account": (_text, "an account name"),
    "qos": (_text, "a QOS name"),
    "time": (_check_time, 'a Slurm time limit, e.g. "2:00:00", "1-00:00:00" or 90 (minutes)'),
    "cpus_per_gpu": (lambda v: v if _is_int(v) and v >= 1 else None, "an integer >= 1"),
    "cpus_per_task": (lambda v: v if _is_int(v) and v >= 1 else None, "an integer >= 1"),
    "mem": (_check_mem, 'a memory size, e.g. "32G" or "4000M" (an integer means MiB)'),
    "constraint": (_text, 'a node feature expression, e.g. "a100|h100"'),
    "extra": (lambda v: _lines(v, options=True), 'a list of sbatch options, e.g. ["--exclusive"]'),
    "setup": (lambda v: _lines(v, options=False), 'a list of shell lines, e.g. ["module load cuda"]'),
    "signal_seconds": (
        lambda v: v if _is_int(v) and 0 <= v <= 65535 else None,
        "an integer number of seconds 0-65535 (0: no warning before the time limit)",
    ),
    "python": (_text, 'the interpreter on the nodes, e.g. "python3" or "/opt/venv/bin/python"'),
}


def check_slurm_table(table: Any, prefix: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A ``slurm`` table -> (checked values, [(dotted key, message)]); ``prefix`` names the table."""
    if not isinstance(table, dict):
        return {}, [
            (prefix, f'expected a table of Slurm options, e.g. {{ partition = "gpu" }}, got {table!r}')
        ]
    values, problems = check_table(table, CHECKS, prefix, "Slurm option")
    if "cpus_per_gpu" in values and "cpus_per_task" in values:
        problems.append((f"{prefix}.cpus_per_task", "set either cpus_per_gpu or cpus_per_task, not both"))
    return values, problems
