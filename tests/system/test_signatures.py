"""No function in mdtui/ or engine/ takes more than MAX_PARAMETERS parameters.

A wider signature hides its parts: group them in a small dataclass that names them (the loop's
``TrainParts``, the loader's ``Placement``, the bench's ``BenchShape``). ``self``/``cls`` are not
counted; ``*args`` and ``**kwargs`` count one each.

Typer verbs are exempt: each of their parameters is a command-line option (its default is a
``typer.Option``/``typer.Argument``), and the CLI is where the user reads them, with ``-h``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mdtui", "engine")
MAX_PARAMETERS = 8


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (args.vararg is not None) + (args.kwarg is not None)


def is_cli_verb(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Parameters declared as Typer options/arguments (``= typer.Option(...)`` or ``Annotated``)."""
    defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
    annotations = [a.annotation for a in (*node.args.args, *node.args.kwonlyargs) if a.annotation is not None]
    source = " ".join(ast.unparse(part) for part in (*defaults, *annotations))
    return "typer.Option" in source or "typer.Argument" in source


def wide_functions(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        count = parameter_count(node)
        if count > MAX_PARAMETERS and not is_cli_verb(node):
            found.append(f"{where}:{node.lineno} {node.name} takes {count} parameters")
    return found


def test_no_function_takes_more_than_eight_parameters() -> None:
    wide = [
        line
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in wide_functions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not wide, "group these parameters in a dataclass:\n" + "\n".join(wide)


def test_a_wide_function_is_found_and_a_cli_verb_is_not() -> None:
    nine = ", ".join(f"p{i}" for i in range(9))
    source = (
        f"def wide({nine}): pass\n"
        f"class C:\n    def method(self, {', '.join(f'p{i}' for i in range(8))}): pass\n"
        f"def verb({', '.join(f'p{i}: int = typer.Option(0)' for i in range(9))}): pass\n"
        "def star(a, b, c, d, e, f, g, *args, **kwargs): pass\n"
    )
    assert wide_functions(source, "x.py") == [
        "x.py:1 wide takes 9 parameters",
        "x.py:5 star takes 9 parameters",
    ]
