"""The typed result of reading experiments.toml: settings, experiments, a plan, located errors.

Pure data and the ``[settings]`` validator; the builder that fills these lives in
``mdtui.registry.build`` and the public entry points in ``mdtui.registry.plan``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.schema.config import DATA_ROOT_ENV, resolve_data_root
from mdtui.registry.checks import (
    NOTIFY_EXPECTED,
    NOTIFY_ON,
    ON_LOST,
    check_table,
    notify_command_problem,
)
from mdtui.registry.slurm_options import LAUNCHERS, SlurmOptions, check_slurm_table

# Seconds between a stop's SIGTERM and its SIGKILL unless [settings] stop_grace_seconds says otherwise:
# the one default for `mdtui stop`, the queue, the TUI, Ctrl-C, the supervisor and Slurm jobs.
STOP_GRACE_SECONDS = 30.0

__all__ = [
    "DATA_ROOT_ENV",
    "Experiment",
    "ExperimentsError",
    "LocatedIssue",
    "Plan",
    "Settings",
    "parse_settings",
]


@dataclass(frozen=True)
class LocatedIssue:
    """One problem in an experiments file, with everything needed to find and fix it."""

    file: str
    line: int  # 1-based; 0 when the problem is the file itself
    column: int | None
    experiment: str | None
    key: str | None  # dotted key, e.g. "loss.threshold" or "settings.max_devices"
    message: str

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.column and self.experiment is None and self.key is None:
            where += f":{self.column}"
        parts = []
        if self.experiment is not None:
            parts.append(f'experiment "{self.experiment}"')
        if self.key:
            parts.append(f"key {self.key}")
        context = ", ".join(parts)
        return f"{where}: {context}: {self.message}" if context else f"{where}: {self.message}"


class ExperimentsError(Exception):
    """Every problem found in an experiments file (validation collects them all)."""

    def __init__(self, issues: list[LocatedIssue]) -> None:
        self.issues = issues
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(issue.format() for issue in self.issues)


@dataclass(frozen=True)
class Settings:
    path: Path  # the experiments.toml file
    runs_dir: Path  # absolute (relative paths are relative to the toml's directory)
    results_log: Path
    data_root: Path | None  # MDTUI_DATA_ROOT overrides
    exclude_devices: tuple[str, ...] = ()  # scheduler policies (docs/queue.md)
    max_devices: int | None = None
    runs_per_device: int = 1
    min_free_memory_mb: int = 2048
    max_utilization: int = 90
    device_order: tuple[str, ...] = ()
    sweep_limit: int = 256
    stop_grace_seconds: float = STOP_GRACE_SECONDS
    launcher: str = "local"  # "local" | "slurm": where runs execute (--launcher overrides)
    slurm: SlurmOptions = SlurmOptions()  # [settings.slurm]
    notify: tuple[str, ...] = ()  # a command run when a run ends (mdtui.execution.notify)
    notify_on: str = "end"  # "end" | "failure"
    on_lost: str = "keep"  # "keep" | "resume": the scheduler resumes lost runs (mdtui.scheduling.retry)


@dataclass(frozen=True)
class Experiment:
    name: str  # expanded: "r32-refl[loss.threshold=0.4]"
    table: str  # the [experiment.X] it came from
    group: str
    baseline: bool
    tags: tuple[str, ...]
    description: str
    upstream: str | None  # `from`, an expanded experiment name
    seeds: tuple[int, ...]  # one run per seed
    sweep_point: dict[str, Any]
    config: dict[str, Any]  # resolved engine config without run_id/seed/init_checkpoint/cache_dir
    line: int  # line of the [experiment.X] header
    gpus: int = 1  # devices a run needs ("cpu" when none exist)
    written: dict[str, Any] = field(default_factory=dict)  # engine keys as written (merged), for knobs
    nodes: int = 1  # Slurm nodes a run spans (srun + torchrun rendezvous when > 1)
    slurm: dict[str, Any] = field(default_factory=dict)  # its `slurm = {...}`, over [settings.slurm]
    paper: dict[str, Any] = field(default_factory=dict)  # the paper's figures: {"acc1": 82.5, "source": ...}
    notify: tuple[str, ...] = ()  # its own `notify`, else [settings] notify; () = none
    notify_on: str = "end"
    retries: dict[str, int] = field(default_factory=dict)  # {"lost": n, "failed": m}: resumes allowed


@dataclass(frozen=True)
class Plan:
    settings: Settings
    experiments: dict[str, Experiment]  # in file order, sweeps expanded
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> its expanded names

    def group(self, name: str) -> list[Experiment]:
        return [e for e in self.experiments.values() if e.group == name]

    def groups(self) -> list[str]:
        """Group names in file order."""
        return list(dict.fromkeys(e.group for e in self.experiments.values()))

    def baseline_of(self, exp: Experiment) -> Experiment | None:
        return next((e for e in self.group(exp.group) if e.baseline), None)


# --------------------------------------------------------------------------- [settings]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _device_list(v: Any) -> tuple[str, ...] | None:
    """Devices as strings: ["0", "1", "cpu"]; integers are accepted."""
    if not isinstance(v, list) or not all(_is_int(x) or isinstance(x, str) for x in v):
        return None
    return tuple(str(x) for x in v)


# key -> (check returning the parsed value or None, what a right value looks like)
_SETTINGS: dict[str, tuple[Any, str]] = {
    "runs_dir": (lambda v: v if isinstance(v, str) and v else None, "a path string"),
    "results_log": (lambda v: v if isinstance(v, str) and v else None, "a path string"),
    "data_root": (lambda v: v if isinstance(v, str) and v else None, "a path string"),
    "exclude_devices": (_device_list, 'a list of device ids, e.g. ["0", "3"]'),
    "device_order": (_device_list, 'a list of device ids in the order to try, e.g. ["1", "0"]'),
    "max_devices": (lambda v: v if _is_int(v) and v >= 1 else None, "an integer >= 1"),
    "runs_per_device": (lambda v: v if _is_int(v) and v >= 1 else None, "an integer >= 1"),
    "min_free_memory_mb": (lambda v: v if _is_int(v) and v >= 0 else None, "an integer >= 0 (MiB)"),
    "max_utilization": (lambda v: v if _is_int(v) and 0 <= v <= 100 else None, "an integer percentage 0-100"),
    "sweep_limit": (lambda v: v if _is_int(v) and v >= 1 else None, "an integer >= 1"),
    "stop_grace_seconds": (
        lambda v: (
            float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e300 else None
        ),
        "a number of seconds >= 0",
    ),
    "launcher": (lambda v: v if v in LAUNCHERS else None, '"local" or "slurm"'),
    "slurm": (lambda v: v, "a table of Slurm options"),  # checked key by key below
    "notify": (lambda v: tuple(v) if notify_command_problem(v) is None else None, NOTIFY_EXPECTED),
    "notify_on": (lambda v: v if v in NOTIFY_ON else None, '"end" (every ending) or "failure"'),
    "on_lost": (
        lambda v: v if v in ON_LOST else None,
        '"keep" (a lost run waits for `mdtui run --resume`) or "resume" (the scheduler resumes it)',
    ),
}


def _resolve_path(raw: str, base: Path) -> Path:
    p = Path(os.path.expandvars(raw)).expanduser()
    return p if p.is_absolute() else (base / p)


def parse_settings(
    table: Any, path: Path, env: dict[str, str] | None = None
) -> tuple[Settings, list[tuple[str, str]]]:
    """``[settings]`` -> Settings and a list of (dotted key, message) problems."""
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    if table is None:
        table = {}
    if not isinstance(table, dict):
        problems.append(("settings", "[settings] must be a table"))
        table = {}
    values, unknown = check_table(table, _SETTINGS, "settings", "setting")
    problems += unknown
    if "slurm" in values:
        checked, slurm_problems = check_slurm_table(values["slurm"], "settings.slurm")
        problems += slurm_problems
        values["slurm"] = SlurmOptions().merged(checked)
    base = path.parent
    # The environment wins over the file (docs/configuration.md): one file, several machines.
    data_root = resolve_data_root(None, base, setting=values.get("data_root"), env=env)
    settings = Settings(
        path=path,
        runs_dir=_resolve_path(values.pop("runs_dir", "runs"), base),
        results_log=_resolve_path(values.pop("results_log", "RESULTS.md"), base),
        data_root=data_root,
        **{k: v for k, v in values.items() if k != "data_root"},
    )
    return settings, problems
