"""Import boundaries (docs/internals.md): the manager never pays for torch, the engine never for UI.

Each check runs in a fresh interpreter, so modules imported by other tests cannot hide a violation.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

CHECK = """
import json, sys
{imports}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
"""


def imported(imports: str, forbidden: set[str]) -> list[str]:
    code = CHECK.format(imports=imports, forbidden=forbidden)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_manager_core_imports_neither_torch_nor_textual() -> None:
    leaked = imported(
        "import mdtui.cli, mdtui.registry.plan, mdtui.runs.store, mdtui.execution.supervise, mdtui.commands.common",
        {"torch", "torchvision", "textual"},
    )
    assert leaked == []


def test_cli_help_imports_neither_torch_nor_textual() -> None:
    leaked = imported(
        "from typer.testing import CliRunner\nfrom mdtui.cli import app\nCliRunner().invoke(app, ['--help'])",
        {"torch", "torchvision", "textual"},
    )
    assert leaked == []


def test_engine_imports_no_manager_or_ui() -> None:
    leaked = imported("import engine", {"mdtui", "textual", "rich", "typer"})
    assert leaked == []


@pytest.mark.parametrize("module", ["engine.schema.events", "engine.schema.config", "engine.schema.validate"])
def test_protocol_and_config_are_torch_free(module: str) -> None:
    assert (
        imported(f"import {module}", {"torch", "torchvision", "numpy", "mdtui", "textual", "rich", "typer"})
        == []
    )


def test_engine_main_module_imports_no_manager_or_ui() -> None:
    if not (REPO / "engine" / "__main__.py").exists():
        pytest.skip("engine/__main__.py is not built yet")
    # import the entry point's module without running it
    leaked = imported(
        "import importlib.util\n"
        "spec = importlib.util.find_spec('engine.__main__')\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)",
        {"mdtui", "textual", "rich", "typer"},
    )
    assert leaked == []


LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"


def test_layers_contract_holds() -> None:
    """pyproject's [tool.importlinter] contracts: every mdtui package imports only the ones below it.

    An upward import (say ``mdtui.runs`` importing ``mdtui.execution``) breaks a contract and this test
    prints which line did it.
    """
    lint = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout[-4000:] + lint.stderr[-2000:]
