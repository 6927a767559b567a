"""Helpers shared by every CLI verb module (``mdtui/commands/*.py`` and ``mdtui/cli.py``).

User mistakes end here with a clear message and exit code 2 (bad input) or 1 (an operation failed),
never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.text import Text

from mdtui.registry.plan import ExperimentsError, Plan, load_plan
from mdtui.runs.store import RunRecord, RunStore
from mdtui.system.formats import fmt_pct as fmt_pct  # the CLI's accuracies (cli, run)
from mdtui.system.terminal import SafeConsole

# Consoles resolve sys.stdout / sys.stderr at write time, so CliRunner captures them. They read no
# markup (user text such as ``x[optim.lr=1e-05]`` is printed as is) and escape control characters:
# style with ``Text``/``style=``, or pass ``markup=True`` for a literal that holds no user text.
console = SafeConsole()
err_console = SafeConsole(stderr=True)

EXIT_USAGE = 2  # bad input: unknown names, invalid experiments.toml
EXIT_FAILED = 1  # an operation failed (a run failed, a process could not be signalled)


def fail(msg: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``msg`` to stderr and leave with ``code`` (no traceback)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", msg), soft_wrap=True)
    raise typer.Exit(code)


def usage_error(msg: str) -> NoReturn:
    """``fail`` with exit code 2: the user asked for something that does not exist or is invalid."""
    fail(msg, EXIT_USAGE)


def plan_file(ctx: typer.Context | None) -> Path | None:
    """The experiments.toml chosen with the global ``--file/-f`` option, if any."""
    obj = getattr(ctx, "obj", None) if ctx is not None else None
    if isinstance(obj, dict) and obj.get("file"):
        return Path(obj["file"])
    return None


def load_plan_or_exit(file: Path | str | None = None) -> Plan:
    """Load and validate experiments.toml; on errors print each located issue and exit 2.

    ``load_plan`` keeps the last plan it read, so the root callback (restarting a killed scheduler)
    and the verb of one call share one parse of an unchanged file.
    """
    path = Path(file).expanduser() if file is not None else None
    try:
        return load_plan(path)
    except ExperimentsError as exc:
        err_console.print(exc.format(), soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    except FileNotFoundError as exc:
        where = exc.filename or path or "experiments.toml"
        usage_error(
            f"experiments file not found: {where}. Pass one with `mdtui -f PATH ...`, set MDTUI_EXPERIMENTS, "
            "or run mdtui in the directory that holds experiments.toml."
        )


def open_store(plan: Plan) -> RunStore:
    """The run store of ``plan`` (its ``settings.runs_dir``); git facts come from the toml's directory."""
    try:
        return RunStore(plan.settings.runs_dir, experiments_file=plan.settings.path)
    except OSError as exc:
        fail(f"cannot open the runs directory {plan.settings.runs_dir}: {exc.strerror or exc}")


def resolve_run_or_exit(store: RunStore, ref: str) -> RunRecord:
    """A run by id, unique id prefix/suffix, or experiment name (its latest run); else exit 2."""
    try:
        return store.resolve(ref)
    except LookupError as exc:
        usage_error(_lookup_message(exc))


def _lookup_message(exc: LookupError) -> str:
    # KeyError (a LookupError) repr-quotes its argument; show the plain text.
    return str(exc.args[0]) if exc.args else str(exc)


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, never wrapped or coloured by Rich."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fmt_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m07s``, ``12s``; ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
