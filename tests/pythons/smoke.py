"""The manager's smoke test on one Python, run by .ci/pythons.sh inside a torch-free venv.

What a researcher does first on their own server, on whatever Python it has: every ``mdtui``
module imports, ``validate``/``list``/``status``/``report`` work on the shipped experiments.toml,
and the TUI starts headless on it. Plain Python (no pytest), so it needs nothing the manager's
own dependencies do not bring. Exit status 0 when all passed; each failure says what failed.

Usage: python tests/pythons/smoke.py REPO_ROOT
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CLI_VERBS = (["validate"], ["list"], ["status"], ["report"], ["data", "--no-verify"])
TUI_SIZE = (120, 40)


def import_everything() -> int:
    """Import every module of the ``mdtui`` package; the manager must never pull in torch."""
    import mdtui

    names = ["mdtui"] + [m.name for m in pkgutil.walk_packages(mdtui.__path__, "mdtui.")]
    for name in names:
        importlib.import_module(name)
    leaked = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
    if leaked:
        raise AssertionError(f"importing mdtui imported {', '.join(leaked)}")
    return len(names)


def run_verbs(work: Path) -> None:
    """The CLI verbs a first look uses, as the console script runs them."""
    script = Path(sys.executable).with_name("mdtui")
    for verb in CLI_VERBS:
        done = subprocess.run(
            [str(script), *verb], cwd=work, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise AssertionError(
                f"`mdtui {' '.join(verb)}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )


async def start_tui(plan: Path) -> int:
    """Start the TUI headless on the shipped file; it must show the file's experiments."""
    from mdtui.tui.app import MdtuiApp

    app = MdtuiApp(plan)
    async with app.run_test(size=TUI_SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if app.snapshot is not None and app.snapshot.experiments:
                break
        shown = len(app.snapshot.experiments) if app.snapshot is not None else 0
        await app.action_quit()
    if not shown:
        raise AssertionError("the TUI started but showed no experiment of the shipped file")
    return shown


def main(repo: Path) -> int:
    version = ".".join(map(str, sys.version_info[:3]))
    with tempfile.TemporaryDirectory(prefix="mdtui-smoke-") as tmp:
        work = Path(tmp)
        shutil.copy(repo / "experiments.toml", work / "experiments.toml")
        os.chdir(work)
        # no GPU query, no data root of the machine running CI: the smoke sees the file only
        os.environ["MDTUI_FAKE_GPUS"] = "0"
        os.environ.pop("MDTUI_DATA_ROOT", None)
        os.environ.pop("MDTUI_EXPERIMENTS", None)
        modules = import_everything()
        run_verbs(work)
        shown = asyncio.run(start_tui(work / "experiments.toml"))
        if (work / "runs").exists() and any((work / "runs").glob("*/*")):
            raise AssertionError("a read-only first look created a run directory")
    print(f"python {version}: {modules} mdtui modules import, CLI verbs pass, TUI shows {shown} experiments")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
