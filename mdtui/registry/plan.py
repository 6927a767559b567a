"""experiments.toml -> a validated ``Plan`` of ``Experiment`` specs (docs/configuration.md).

The file has three kinds of tables:

* ``[settings]``: paths and scheduler policies (``Settings``); unknown keys are errors.
* ``[defaults]``: engine keys (and ``tags``/``seeds``/``gpus``) merged under every experiment.
* ``[experiment.NAME]``: manager keys -- ``extends``, ``sweep``, ``from``, ``group``, ``baseline``,
  ``tags``, ``description``, ``seeds``/``seed``, ``gpus``, ``paper`` (the published figures shown
  beside the measured ones) -- plus engine keys, validated by
  ``engine.schema.validate.from_dict``, the very function the engine runs, so "validate" and "run" agree.

How an experiment is built: ``[defaults]``, then its ``extends`` chain (root first), then the table
itself, each merged over the previous one table by table; lists and scalars replace. A named block
(``loss``, ``optim``, ...) whose ``name`` changes starts afresh instead of merging, so ``loss = "ce"``
under a REFL parent does not inherit ``threshold``. ``extends`` inherits every key except
``baseline``, ``sweep``, ``description`` and ``paper`` (a child declares its own sweep: inheriting
one would silently multiply runs; and a variant is not the method whose figure its parent names);
``from`` and ``group`` are inherited, so variants can extend one base.

Sweeps: ``sweep = { "loss.threshold" = [0.5, 0.4] }`` is a cartesian product in the order written.
Expanded names are ``NAME[key=value,key2=value2]`` with values written compactly: integers as
digits, floats in Python's shortest round-trip form (``0.4``, ``1e-05``, ``0.0001``, ``100.0``),
booleans as ``true``/``false``, simple strings bare and other strings JSON-quoted, lists as
``[a,b]``. A sweep forms its own group unless ``group`` is set. ``baseline = true`` on a swept table
marks the one point whose swept values equal the table's own values.

``from`` names an experiment (an expanded name for a sweep point) whose best checkpoint initialises
this one; ``doctor.mask.combine_with`` names one whose channel mask is combined with this one's. Both
are dependencies: unknown names and cycles are errors.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mdtui.registry.build import PlanBuilder
from mdtui.registry.rules import closest, flatten_keys
from mdtui.registry.spec import DATA_ROOT_ENV, Experiment, ExperimentsError, LocatedIssue, Plan, Settings
from mdtui.registry.toml_lines import MAX_NESTING, scan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DATA_ROOT_ENV",
    "Experiment",
    "ExperimentsError",
    "LocatedIssue",
    "Plan",
    "Settings",
    "closest",
    "default_path",
    "engine_config",
    "find_experiment",
    "knobs",
    "load_plan",
    "select_experiments",
]


def default_path() -> Path:
    """``$MDTUI_EXPERIMENTS`` or ``./experiments.toml``."""
    return Path(os.environ.get("MDTUI_EXPERIMENTS") or "experiments.toml")


# The last plan read, by everything it depends on: one CLI call asks for it twice (the root callback
# restarting a killed scheduler, then the verb) and the TUI re-reads it on every change check.
_last: tuple[tuple[Any, ...], Plan | ExperimentsError] | None = None


def load_plan(path: Path | str | None = None, *, env: dict[str, str] | None = None) -> Plan:
    """Read, validate and expand an experiments file; raise ``ExperimentsError`` with every issue.

    ``env`` replaces ``os.environ`` for ``MDTUI_DATA_ROOT`` (tests). An unchanged file (same text,
    working directory and environment) read again in the same process gives the same Plan without
    parsing it again; a Plan is never modified by its readers.
    """
    global _last
    path = Path(path) if path is not None else default_path()
    shown = _display_path(path)
    text = _read(path, shown)
    key = (
        str(path.resolve()),
        text,
        shown,
        os.getcwd(),
        frozenset(os.environ.items()),  # $VARS in [settings] paths, MDTUI_DATA_ROOT
        None if env is None else env.get(DATA_ROOT_ENV),
    )
    if _last is None or _last[0] != key:
        try:
            _last = (key, _parse(path, shown, text, env))
        except ExperimentsError as exc:
            _last = (key, exc)
    outcome = _last[1]
    if isinstance(outcome, ExperimentsError):
        raise ExperimentsError(outcome.issues)
    return outcome


def _read(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentsError(
            [
                LocatedIssue(
                    shown, 0, None, None, None, "file not found (pass a path or set MDTUI_EXPERIMENTS)"
                )
            ]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentsError(
            [LocatedIssue(shown, 0, None, None, None, f"cannot read the file: {exc}")]
        ) from None


def _parse(path: Path, shown: str, text: str, env: dict[str, str] | None) -> Plan:
    lines, too_deep = scan(text)
    if too_deep is not None:  # before tomllib, which would recurse itself into a RecursionError
        raise ExperimentsError([_nesting_issue(shown, *too_deep)])
    try:
        doc = tomllib.loads(text)
        return PlanBuilder(path.resolve(), shown, text, doc, env, lines).build()
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentsError([_syntax_issue(shown, exc, text)]) from None
    except RecursionError:  # a nesting the scanner did not count: still a located error, not a crash
        raise ExperimentsError([_nesting_issue(shown, 0, None)]) from None


def _nesting_issue(shown: str, line: int, column: int | None) -> LocatedIssue:
    return LocatedIssue(
        shown,
        line,
        column,
        None,
        None,
        f"values are nested more than {MAX_NESTING} levels deep (arrays, inline tables or dotted keys); "
        "an experiments file needs only a few",
    )


def _display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _syntax_issue(shown: str, exc: Exception, text: str = "") -> LocatedIssue:
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    end = re.search(r"\s*\(at end of document\)", message)
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    elif end:  # a torn file: point at its last line
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        message = message[: end.start()] + " (at the end of the file)"
    else:  # pragma: no cover - every tomllib error carries its position
        line, column = getattr(exc, "lineno", 0) or 0, getattr(exc, "colno", None)
    return LocatedIssue(shown, line, column, None, None, f"TOML syntax error: {message}")


def find_experiment(plan: Plan, name: str) -> Experiment:
    """The experiment called ``name``; ``LookupError`` naming the closest ones otherwise."""
    if name in plan.experiments:
        return plan.experiments[name]
    points = plan.tables.get(name, ())
    if len(points) > 1:
        raise LookupError(f'"{name}" is a sweep of {len(points)} experiments; name one: {", ".join(points)}')
    near = closest(name, plan.experiments, n=5)
    hint = f"; closest: {', '.join(near)}" if near else ""
    raise LookupError(f'no experiment named "{name}" in {plan.settings.path.name}{hint}')


def select_experiments(plan: Plan, refs: Iterable[str]) -> list[Experiment]:
    """Experiments named by ``refs``: an expanded name, a swept table (all its points) or a group."""
    out: dict[str, Experiment] = {}
    for ref in refs:
        if ref in plan.experiments:
            picked = [plan.experiments[ref]]
        elif plan.tables.get(ref):
            picked = [plan.experiments[n] for n in plan.tables[ref]]
        elif plan.group(ref):
            picked = plan.group(ref)
        else:
            picked = [find_experiment(plan, ref)]  # raises with the closest names
        out.update((e.name, e) for e in picked)
    return list(out.values())


def knobs(plan: Plan, exp: Experiment) -> dict[str, Any]:
    """Dotted keys whose value differs from the group's baseline (with none: the group's first).

    Keys as written are compared, falling back to resolved values for keys only one side wrote, so a
    REFL run against a CE baseline shows ``loss.name`` and ``loss.threshold``, not every default of
    the REFL loss. Sweep keys come first, then ``from``, then the rest in file order.
    """
    group = plan.group(exp.group)
    ref = plan.baseline_of(exp) or (group[0] if group else None)
    if ref is None or ref.name == exp.name:
        return {}
    out: dict[str, Any] = dict(exp.sweep_point)
    if exp.upstream != ref.upstream:
        out["from"] = exp.upstream
    mine, theirs = flatten_keys(exp.written), flatten_keys(ref.written)
    mine_all, theirs_all = flatten_keys(exp.config), flatten_keys(ref.config)
    for key in [*mine, *(k for k in theirs if k not in mine)]:
        if key in out or key == "experiment" or (key not in mine and key not in mine_all):
            continue  # a parameter of the baseline's loss that this experiment's loss does not take
        value = mine.get(key, mine_all.get(key))
        if value != theirs.get(key, theirs_all.get(key)):
            out[key] = value
    return out


def engine_config(
    plan: Plan,
    exp: Experiment,
    *,
    run_id: str,
    seed: int,
    init_checkpoint: str | None = None,
    cache_dir: str | None = None,
    combine_path: str | None = None,
) -> dict[str, Any]:
    """The dict written to config.json: the experiment's resolved config plus the run's own keys.

    Data root: ``data.root`` when the experiment sets it, else ``Settings.data_root`` (which is
    ``MDTUI_DATA_ROOT`` when set, else ``[settings] data_root``). ``combine_path`` is the artifacts
    directory of the ``doctor.mask.combine_with`` experiment's run, when there is one.
    """
    cfg = copy.deepcopy(exp.config)
    cfg.update(
        run_id=run_id, experiment=exp.name, seed=seed, init_checkpoint=init_checkpoint, cache_dir=cache_dir
    )
    data = cfg.setdefault("data", {})
    if not data.get("root") and plan.settings.data_root is not None:
        data["root"] = str(plan.settings.data_root)
    if combine_path is not None and isinstance(cfg.get("doctor"), dict):
        cfg["doctor"].setdefault("mask", {})["combine_path"] = combine_path
    return cfg
