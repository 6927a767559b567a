"""One decision, one writer: a terminal status reaches the index only through mdtui.execution.ending.

``settle`` (and ``end_unstarted`` / ``converge``, which end in the same writes) is what gives a run
its exit.json and its RESULTS.md line, idempotently; a terminal status written anywhere else would
leave a run ended in the index with neither. This walks every module of ``mdtui`` and fails on a
store write (``update``, ``transition``, ...) whose ``status`` is a finished one, spelled as a
string or as ``RunStatus.X``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mdtui
from mdtui.runs.status import FINISHED, RunStatus

PACKAGE = Path(mdtui.__file__).parent
THE_WRITER = PACKAGE / "execution" / "ending.py"
STORE_WRITES = {
    "update",
    "transition",
    "transition_in",
    "begin_attempt",
    "update_run_json",
    "mirror_run_json",
    "create_run",
    "create_run_for",
}
FINISHED_VALUES = {s.value for s in FINISHED}
FINISHED_NAMES = {s.name for s in FINISHED}


def _terminal(value: ast.expr) -> bool:
    """``"failed"``, ``RunStatus.FAILED`` or ``RunStatus.FAILED.value`` (any finished status)."""
    if isinstance(value, ast.Constant):
        return value.value in FINISHED_VALUES
    if isinstance(value, ast.Attribute) and value.attr == "value":
        value = value.value
    return (
        isinstance(value, ast.Attribute)
        and value.attr in FINISHED_NAMES
        and isinstance(value.value, ast.Name)
        and value.value.id == RunStatus.__name__
    )


def _status_values(call: ast.Call) -> list[ast.expr]:
    """The ``status`` a call writes: a keyword, or a key of a ``**{...}`` or a positional dict."""
    found = [k.value for k in call.keywords if k.arg == "status"]
    dicts = [k.value for k in call.keywords if k.arg is None] + list(call.args)
    for d in dicts:
        if isinstance(d, ast.Dict):
            found += [
                v
                for k, v in zip(d.keys, d.values, strict=True)
                if isinstance(k, ast.Constant) and k.value == "status"
            ]
    return found


def terminal_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in STORE_WRITES and any(_terminal(v) for v in _status_values(node)):
            hits.append(f"{path}:{node.lineno}: {ast.unparse(node)[:120]}")
    return hits


def test_only_ending_writes_a_terminal_status() -> None:
    hits = [
        hit for path in sorted(PACKAGE.rglob("*.py")) if path != THE_WRITER for hit in terminal_writes(path)
    ]
    assert hits == [], "terminal statuses written outside mdtui.execution.ending:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "source",
    [
        'store.update(run_id, status="failed", error="x")',
        "store.update(run_id, status=RunStatus.FAILED.value)",
        "self.store.transition(run_id, ('queued',), status=RunStatus.CANCELLED)",
        'store.begin_attempt(run_id, **{"status": "lost"})',
    ],
)
def test_the_walk_finds_each_spelling(tmp_path: Path, source: str) -> None:
    module = tmp_path / "probe.py"
    module.write_text(source + "\n", encoding="utf-8")
    assert len(terminal_writes(module)) == 1, source


def test_a_live_status_is_not_a_terminal_write() -> None:
    call = ast.parse("store.update(run_id, status=RunStatus.RUNNING.value)").body[0].value  # type: ignore[attr-defined]
    assert not any(_terminal(v) for v in _status_values(call))


STATUS_VALUES = {s.value for s in RunStatus}


def _is_status_ref(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "status") or (
        isinstance(node, ast.Name) and node.id == "status"
    )


def _spelled(node: ast.expr) -> bool:
    """A status written as a string: ``"failed"``, or a tuple/list/set holding one."""
    if isinstance(node, ast.Constant):
        return node.value in STATUS_VALUES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_spelled(e) for e in node.elts)
    return False


def spelled_statuses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_status_ref(o) for o in operands) and any(_spelled(o) for o in operands):
                hits.append(f"{path}:{node.lineno}: {ast.unparse(node)[:120]}")
    return hits


def test_a_status_is_compared_as_a_run_status_never_as_a_string() -> None:
    """``RunStatus`` is the one spelling of a status (mdtui.runs.status): a typo in a string compare
    would silently never match."""
    hits = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in spelled_statuses(path)]
    assert hits == [], "statuses spelled as strings (use RunStatus):\n" + "\n".join(hits)


def test_the_compare_walk_finds_a_spelled_status(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text('ok = rec.status in ("queued", "blocked") or status == "failed"\n', encoding="utf-8")
    assert len(spelled_statuses(module)) == 2
