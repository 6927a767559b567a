"""The tests' exact versions live in tests/constraints.txt and in pyproject's dev extra: the same ones.

Users get ranges (pyproject ``dependencies``); the README's test command installs the dev extra, and
.ci/pythons.sh installs the manager under the constraints file. If the two lists drift, one of those
installs renders the TUI snapshots with versions the snapshots were not made with.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _exact_pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def test_dev_extra_pins_what_the_constraints_pin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    constraints = _exact_pins((ROOT / "tests" / "constraints.txt").read_text(encoding="utf-8").splitlines())
    assert "textual" in constraints
    assert _exact_pins(project["optional-dependencies"]["dev"]) == constraints


def test_users_get_ranges_that_admit_the_tested_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not _exact_pins(project["dependencies"]), "exact pins belong to tests/constraints.txt"
    from packaging.requirements import Requirement

    declared = {Requirement(d).name.lower(): Requirement(d).specifier for d in project["dependencies"]}
    constraints = _exact_pins((ROOT / "tests" / "constraints.txt").read_text(encoding="utf-8").splitlines())
    for name, version in constraints.items():
        if name in declared:
            assert version in declared[name], f"{name}=={version} is outside the declared {declared[name]}"
