"""Writing a run directory: making ``runs/<experiment>/<run id>/``, its provenance, and run.json edits.

The run directory is the source of truth (docs/results.md); the index only caches it. Both the
manager's ``RunStore`` and a cluster node's ``RunDirStore`` (mdtui.execution.node_store) change a
run.json through ``rewrite_run_json``, one locked read-modify-write, so the two never lose each
other's fields.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.runs.record import new_run_id
from mdtui.system.fs import atomic_write_json, file_lock, read_json, sanitize_name
from mdtui.system.processes import git_info, package_versions, user_name

if TYPE_CHECKING:
    from mdtui.registry.plan import Experiment

RUN_JSON = "run.json"
RUN_LOCK = ".run.lock"


def make_run_dir(runs_dir: Path, experiment: str, run_id: str | None) -> Path:
    """A new, empty ``runs/<experiment>/<run id>/`` (a fresh id on a clash, unless one was given)."""
    exp_dir = runs_dir / sanitize_name(experiment)
    exp_dir.mkdir(parents=True, exist_ok=True)
    while True:
        run_dir = exp_dir / (run_id or new_run_id())
        try:
            run_dir.mkdir()  # atomic: of two creators of one id, one wins
            break
        except FileExistsError:
            if run_id:
                raise ValueError(f"run directory {run_dir} already exists") from None
    (run_dir / "checkpoints").mkdir()
    (run_dir / "artifacts").mkdir()
    return run_dir


def provenance(
    exp: Experiment,
    run_dir: Path,
    command: list[str] | None,
    *,
    project_dir: Path,
    experiments_file: Path | None,
) -> dict[str, Any]:
    """What run.json records beyond the index fields: where, by whom and with what it ran."""
    return {
        "table": exp.table,
        "upstream": exp.upstream,
        "tags": list(exp.tags),
        "command": command or [sys.executable, "-m", "engine", str(run_dir)],
        "host": socket.gethostname(),
        "user": user_name(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "git": git_info(project_dir),
        "packages": package_versions(),
        "experiments_dir": str(project_dir),
        "experiments_file": str(experiments_file) if experiments_file else None,
        # what settling this run will run (mdtui.execution.notify), fixed when it is created
        "notify": {"command": list(exp.notify), "on": exp.notify_on} if exp.notify else None,
        # how often the scheduler may resume it after it is lost or failed (mdtui.scheduling.retry)
        "retry_policy": dict(exp.retries) if any(exp.retries.values()) else None,
    }


def rewrite_run_json(run_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to ``run_dir/run.json`` in place, atomically, under the run's lock.

    A run folder that is gone (deleted by hand) is left gone, not re-created around run.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    with file_lock(run_dir / RUN_LOCK):
        data = read_json(run_dir / RUN_JSON)
        data = data if isinstance(data, dict) else {}
        change(data)
        atomic_write_json(run_dir / RUN_JSON, data)


def update_run_json(run_dir: Path, fields: dict[str, Any]) -> None:
    """Merge ``fields`` into ``run_dir/run.json`` (``rewrite_run_json``)."""
    rewrite_run_json(run_dir, lambda data: data.update(fields))


def json_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Index fields as run.json holds them (paths as text)."""
    return {k: (str(v) if k == "run_dir" else v) for k, v in fields.items()}


def config_is_leaky(config: dict[str, Any]) -> bool:
    """Whether an engine config selects on the test split (recorded as the run's ``leaky`` flag)."""
    from engine.schema.config import is_leaky
    from engine.schema.validate import ConfigError, from_dict

    try:
        return is_leaky(from_dict(config))
    except (ConfigError, TypeError, ValueError):
        return False
