"""Comments and docs cite what exists.

Scans the code, the tests and the docs (``SCANNED``) for references and fails, naming file and line,
on any that points nowhere:

* a document (``something.md``) that is not in the repository (the reference material the project
  was built from lives outside it; docs/reference-spec.md is its in-repository form);
* a section of docs/reference-spec.md (``reference-spec.md §5.8``, or ``§5.8`` inside that page)
  or a Markdown link anchor (``internals.md#boundaries``) that no heading has;
* the old citation styles ("spec section 3.3", "DESIGN.md section 7") that named documents
  outside the repository;
* a module path, dotted (``mdtui.runs.store``, ``engine.losses.LOSSES``) or as a file path
  (``engine/loop.py``, ``tests/engine/losses/test_losses.py``, ``docs/``), that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("README.md", "docs", "mdtui", "engine", "tests", "benchmarks", "experiments.toml")
SUFFIXES = {".py", ".md", ".toml", ".sh", ".tcss"}
SPEC = "docs/reference-spec.md"
# Files mdtui writes or a user owns, which the docs describe but the repository does not hold.
WRITTEN_BY_MDTUI = {"RESULTS.md"}
FILE_EXTENSIONS = {"db", "toml", "json", "jsonl", "log", "lock", "py", "md", "txt", "npy", "npz", "png", "pt"}

# A document name, not inside a quoted file-name literal of the code ("report.md" written by a test)
DOC_RE = re.compile(r"(?<![\w/.\"'[-])((?:[\w.-]+/)*[\w.-]+\.md)(?![\w\"'])(#[\w-]+)?", re.IGNORECASE)
SECTION_RE = re.compile(r"§\s*(\d+(?:\.\d+)*)")
OLD_STYLE_RE = re.compile(
    r"\b(spec(?:ification)? (?:sections?|§) ?\d|spec \d+\.\d|DESIGN(?:\.md)? section|anchors section)",
    re.IGNORECASE,
)
DOTTED_RE = re.compile(r"(?<![\w./-])((?:mdtui|engine)(?:\.[A-Za-z_]\w*)+)")
PATH_RE = re.compile(r"(?<![\w./-])((?:mdtui|engine|tests|docs|benchmarks)/[\w./-]*)")


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = ROOT / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.suffix in SUFFIXES and "__pycache__" not in p.parts
            )
    return [f for f in files if f != Path(__file__).resolve()]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def headings(doc: Path) -> tuple[set[str], set[str]]:
    """(anchors, section numbers) of a Markdown file's headings."""
    anchors, numbers = set(), set()
    fence = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip()
        anchors.add(slug(title))
        number = re.match(r"(\d+(?:\.\d+)*)\.?\s", title)
        if number:
            numbers.add(number.group(1))
    return anchors, numbers


def find_doc(name: str, rel: str) -> Path | None:
    for base in ((ROOT / rel).parent, ROOT, ROOT / "docs"):
        candidate = (base / name).resolve()
        if candidate.is_file():
            return candidate
    return None


@cache
def module_source(dotted: str) -> str | None:
    parts = dotted.split(".")
    path = ROOT.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return None


def dotted_problem(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[-1] in FILE_EXTENSIONS or parts[-1].startswith("__"):
        return None  # a file name such as mdtui.db, or a module attribute such as __file__
    for cut in range(len(parts), 0, -1):
        source = module_source(".".join(parts[:cut]))
        if source is None:
            continue
        if cut == len(parts):
            return None
        name = parts[cut]
        defined = (
            rf"^\s*(?:def |class |async def )?{name}\b|import .*\b{name}\b|^\s*{name}\s*[:=]|self\.{name}\b"
        )
        if re.search(defined, source, re.MULTILINE):
            return None
        return f"module path {dotted}: {'.'.join(parts[:cut])} has no {name}"
    return f"module path {dotted} does not exist"


def path_problem(raw: str) -> str | None:
    path = raw.rstrip(".,:;)")
    if not path or "..." in path or (ROOT / path).exists():
        return None
    module, _, name = path.rpartition(".")  # engine/doctor.build_doctor: a name in a module file
    if name and not name.endswith("py") and ((ROOT / f"{module}.py").is_file() or (ROOT / module).is_dir()):
        return dotted_problem(f"{module.replace('/', '.')}.{name}")
    return f"path {path} does not exist"


def problems_in(file: Path) -> Iterator[str]:
    return problems_in_text(file.relative_to(ROOT).as_posix(), file.read_text(encoding="utf-8"))


def problems_in_text(rel: str, text: str) -> Iterator[str]:
    """The dangling references in ``text``, read as the repository file ``rel``."""
    is_spec = rel == SPEC
    spec_numbers = headings(ROOT / SPEC)[1] if (ROOT / SPEC).is_file() else set()
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{rel}:{lineno}"
        if OLD_STYLE_RE.search(line):
            yield f"{where}: cites a document outside the repository ({OLD_STYLE_RE.search(line).group(0)!r}); cite {SPEC} §N"
        for match in DOC_RE.finditer(line):
            name, anchor = match.group(1), match.group(2)
            if Path(name).name in WRITTEN_BY_MDTUI:
                continue
            doc = find_doc(name, rel)
            if doc is None:
                yield f"{where}: {name} is not in the repository"
            elif anchor and anchor[1:] not in headings(doc)[0]:
                yield f"{where}: {name} has no heading for {anchor}"
        for match in SECTION_RE.finditer(line):
            cited_here = (
                is_spec
                or "reference-spec" in line[: match.start()]
                or "reference-spec" in _previous(text, lineno)
            )
            if not cited_here:
                yield f"{where}: §{match.group(1)} without the document it belongs to (write {SPEC} §N)"
            elif match.group(1) not in spec_numbers:
                yield f"{where}: {SPEC} has no section {match.group(1)}"
        for match in DOTTED_RE.finditer(line):
            problem = dotted_problem(match.group(1))
            if problem:
                yield f"{where}: {problem}"
        for match in PATH_RE.finditer(line):
            problem = path_problem(match.group(1))
            if problem:
                yield f"{where}: {problem}"


def _previous(text: str, lineno: int) -> str:
    """The line before ``lineno`` (1-based): a citation may wrap after the document's name."""
    lines = text.splitlines()
    return lines[lineno - 2] if lineno >= 2 else ""


def test_every_reference_points_at_something_that_exists() -> None:
    problems = [p for file in scanned_files() for p in problems_in(file)]
    assert not problems, f"{len(problems)} dangling references:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("see model-doctor-spec.md section 5", "not in the repository"),
        ("(spec section 3.3)", "outside the repository"),
        ("(DESIGN.md section 7)", "DESIGN.md is not in the repository"),
        ("docs/reference-spec.md §99.1", "has no section 99.1"),
        ("as §5.8 says", "without the document"),
        ("docs/internals.md#no-such-heading", "has no heading"),
        ("mdtui.runs.no_such_module", "mdtui.runs has no no_such_module"),
        ("mdtui.no_such_package.store", "has no no_such_package"),
        ("engine.losses.NO_SUCH_NAME", "has no NO_SUCH_NAME"),
        ("engine/no_such_file.py", "does not exist"),
    ],
)
def test_a_dangling_reference_is_reported(line: str, expected: str) -> None:
    found = list(problems_in_text("docs/probe.md", f"# probe\n\n{line}\n"))
    assert any(expected in p for p in found), found


def test_references_that_exist_pass() -> None:
    line = (
        "docs/reference-spec.md §5.8, internals.md#boundaries-tested-in-testssystemtest_boundariespy,"
        " mdtui.runs.store, engine.losses.LOSSES, engine/loop.py, tests/engine/, RESULTS.md, runs/mdtui.db"
    )
    assert list(problems_in_text("docs/probe.md", f"# probe\n\n{line}\n")) == []
