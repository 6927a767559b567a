"""``mdtui data``: every dataset the engine knows, where it is expected, whether it is there and intact;
``mdtui data get NAME...``: download the ones that can be (CIFAR-10/100, STL-10) and say exactly what
to obtain, and where to put it, for the ones that cannot (ImageNet-LT, Places-LT, iNaturalist 2018,
image folders).

The manager never imports torch: downloads run in the engine's own process (``python -m
engine.fetch``, which uses torchvision's checksums and unpacking) and this module shows its JSON-line
progress. Where datasets live comes from ``engine.schema.datasets``, the table both sides read.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from engine.schema.catalog import DATASET_NAMES
from engine.schema.config import resolve_data_root
from engine.schema.datasets import (
    DOWNLOADS,
    EMBEDDED,
    FOLDER_HELP,
    MANIFEST_ENV,
    MANUAL_LISTS,
    MIRROR_ENV,
    ManifestError,
    data_mirror,
    dataset_name,
    manifest_path,
    manual_key,
    missing,
    needs,
    sums_for,
)
from mdtui.commands.common import (
    EXIT_FAILED,
    console,
    err_console,
    fail,
    plan_file,
    print_json,
    usage_error,
)
from mdtui.registry.data_presence import data_root_of
from mdtui.registry.plan import ExperimentsError, Plan, load_plan
from mdtui.registry.spec import DATA_ROOT_ENV
from mdtui.system.terminal import Column, print_table

data_app = typer.Typer(
    help="Datasets: where each is expected under the data root, whether it is there; `get` fetches them.",
    no_args_is_help=False,
)

VERIFIED_FILE = ".mdtui-verified.json"  # per dataset folder: files whose MD5 matched, by size+mtime
BY_HAND = ("oltr", "image_folder", "image_mask")

ROOT_HELP = f"data root (default: ${DATA_ROOT_ENV}, else data_root in \\[settings])."  # \[: not markup


def _plan(ctx: typer.Context) -> Plan | None:
    """The experiments file when there is a valid one; ``mdtui data`` works without one too."""
    try:
        return load_plan(plan_file(ctx))
    except (FileNotFoundError, ExperimentsError):
        return None


def _root(plan: Plan | None, given: Path | None) -> Path | None:
    if given is not None:
        return given.expanduser().resolve()
    if plan is not None:
        return plan.settings.data_root
    return resolve_data_root(None, Path.cwd())


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB" if size < 2**30 else f"{size / 2**30:,.1f} GiB"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def damaged_files(folder: Path, sums: dict[str, str]) -> list[str]:
    """Files of ``folder`` whose MD5 does not match; a file verified before at the same size and
    mtime is not read again (the record lives beside them, when the folder is writable)."""
    record_path = folder / VERIFIED_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    bad, changed = [], False
    for name, md5 in sums.items():
        path = folder / name
        if not path.is_file():
            continue  # missing, not damaged: reported as missing
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, md5]
        if record.get(name) == stamp:
            continue
        if _md5(path) == md5:
            record[name], changed = stamp, True
        else:
            bad.append(name)
            record.pop(name, None)
    if changed:
        with contextlib.suppress(OSError):  # a read-only data root: verified again next time
            record_path.write_text(json.dumps(record), encoding="utf-8")
    return bad


def downloadable_row(name: str, root: Path | None, verify: bool) -> dict[str, Any]:
    try:
        source = sums_for(DOWNLOADS[name], manifest_path(None))
    except ManifestError as exc:
        usage_error(str(exc))
    wanted = needs(name, root) or []
    where = wanted[0].path.parent if wanted else Path(source.folder)
    row: dict[str, Any] = {"dataset": name, "where": str(where), "kind": "download"}
    get = f"`mdtui data get {name}` ({_mib(source.archive_bytes)})"
    if root is None:
        return {**row, "state": "no data root", "ok": False, "fix": get}
    absent = [n.path.name for n in wanted if not n.path.is_file()]
    if len(absent) == len(wanted):
        return {**row, "state": "missing", "ok": False, "fix": get}
    if absent:
        return {**row, "state": f"incomplete: no {', '.join(absent)}", "ok": False, "fix": get}
    size = sum((where / f).stat().st_size for f in source.files if (where / f).is_file())
    if not verify:
        return {**row, "state": f"present, {_mib(size)} (not checked)", "ok": True, "fix": ""}
    bad = damaged_files(where, dict(source.files))
    if bad:
        fix = f"`mdtui data get {name}` replaces it"
        return {**row, "state": f"damaged: {', '.join(bad)} fails its MD5", "ok": False, "fix": fix}
    return {**row, "state": f"intact, {_mib(size)} (MD5)", "ok": True, "fix": ""}


def by_hand_rows(name: str, plan: Plan | None) -> list[dict[str, Any]]:
    """One row per distinct data block of ``name`` in the experiments file (their paths differ)."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[Path, ...]] = set()
    for exp in plan.experiments.values() if plan is not None else ():
        data = exp.config.get("data")
        if dataset_name(data) != name:
            continue
        root = data_root_of(exp, plan.settings)
        wanted = tuple(n.path for n in needs(data, root) or [])
        if wanted in seen:
            continue
        seen.add(wanted)
        absent = missing(data, root)
        state = "present" if not absent else ("no data root" if root is None else "missing")
        rows.append(
            {
                "dataset": f"{name} ({exp.table})",
                "where": ", ".join(str(p) for p in wanted),
                "kind": "by hand",
                "state": state,
                "ok": not absent,
                "fix": "" if not absent else f"by hand: `mdtui data get {manual_key(data)}`",
            }
        )
    if not rows:
        rows.append(
            {
                "dataset": name,
                "where": "the paths its experiments name",
                "kind": "by hand",
                "state": "no experiment uses it",
                "ok": True,
                "fix": "",
            }
        )
    return rows


def dataset_rows(plan: Plan | None, root: Path | None, verify: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in DATASET_NAMES:
        if name in EMBEDDED:
            rows.append(
                {
                    "dataset": name,
                    "where": "built in",
                    "kind": "embedded",
                    "state": "ok",
                    "ok": True,
                    "fix": "",
                }
            )
        elif name in DOWNLOADS:
            rows.append(downloadable_row(name, root, verify))
        else:
            rows.extend(by_hand_rows(name, plan))
    return rows


DATA_COLUMNS = (
    Column("dataset", cut="middle", min_width=10),
    Column("where", cut="middle", min_width=16, grow=1),
    Column("state", cut="end", min_width=12),
    Column("to get it", cut="end", min_width=12, drop=1),
)


@data_app.callback(invoke_without_command=True)
def data_cmd(
    ctx: typer.Context,
    root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check MD5 sums of downloaded datasets."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every dataset the engine knows: where it is expected under the data root and its state."""
    if ctx.invoked_subcommand is not None:
        return
    plan = _plan(ctx)
    data_root = _root(plan, root)
    rows = dataset_rows(plan, data_root, verify)
    if as_json:
        print_json({"data_root": str(data_root) if data_root else None, "datasets": rows})
        return
    if data_root is None:
        console.print(
            Text.assemble(
                ("no data root is set", "yellow"),
                f": set {DATA_ROOT_ENV}=DIR (or data_root in [settings] of experiments.toml), or pass --root DIR",
            ),
            soft_wrap=True,
        )
    else:
        console.print(f"data root: {data_root}", soft_wrap=True)
    cells = [
        [r["dataset"], r["where"], Text(r["state"], style="green" if r["ok"] else "yellow"), r["fix"]]
        for r in rows
    ]
    print_table(console, DATA_COLUMNS, cells)
    if any(r["kind"] == "by hand" and not r["ok"] for r in rows):
        console.print(
            "by hand: `mdtui data get imagenet_lt` (or places_lt, inaturalist2018, image_folder) says what to obtain",
            style="dim",
            soft_wrap=True,
        )


def print_by_hand(key: str) -> None:
    if key in MANUAL_LISTS:
        title, text = MANUAL_LISTS[key]
        console.print(
            Text(f"{title}: cannot be downloaded automatically (licence/registration).", style="bold")
        )
        for line in text.split("\n"):
            console.print(f"  {line}", soft_wrap=True)
        console.print(
            '  then set data = { name = "oltr", train_list = "...", eval_list = "..." } in experiments.toml '
            "(paths relative to the data root); `mdtui data` shows whether they are found",
            soft_wrap=True,
        )
    elif key == "oltr":
        for each in MANUAL_LISTS:
            print_by_hand(each)
    elif key in ("image_folder", "image_mask"):
        console.print(Text(f"{key}: your own images, arranged as", style="bold"))
        console.print(f"  {FOLDER_HELP}", soft_wrap=True)
    else:
        console.print(f"{key}: built in, nothing to get")


@data_app.command("get")
def get_cmd(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help=f"datasets: {', '.join(DOWNLOADS)} (or a by-hand one)"),
    root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
    mirror: str | None = typer.Option(
        None,
        "--mirror",
        help=f"base URL serving the archives by name (default: ${MIRROR_ENV} or the authors').",
    ),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        help=f"local JSON of the mirror's MD5 sums (default: ${MANIFEST_ENV}); tests only.",
    ),
) -> None:
    """Download datasets where the engine reads them (MD5-checked, resumable), or say how to get them."""
    known = {*DOWNLOADS, *MANUAL_LISTS, *BY_HAND, *EMBEDDED}
    unknown = [n for n in names if n.lower() not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0].lower(), sorted(known), n=3)
        usage_error(
            f"unknown dataset {unknown[0]!r}"
            + (f" (closest: {', '.join(close)})" if close else "")
            + f"; known: {', '.join(sorted(known))}"
        )
    wanted = [n.lower() for n in names]
    for key in wanted:
        if key not in DOWNLOADS:
            print_by_hand(key)
    downloads = list(dict.fromkeys(k for k in wanted if k in DOWNLOADS))
    if not downloads:
        return
    data_root = _root(_plan(ctx), root)
    if data_root is None:
        usage_error(
            f"no data root to download into: set {DATA_ROOT_ENV}=DIR (or data_root in [settings] of "
            "experiments.toml), or pass --root DIR"
        )
    source = mirror or data_mirror()
    command = [sys.executable, "-m", "engine.fetch", *downloads, "--root", str(data_root)]
    if source:
        command += ["--mirror", source]
    if manifest is not None:
        command += ["--manifest", str(manifest.expanduser().resolve())]
    if run_fetch(command) != 0:
        raise typer.Exit(EXIT_FAILED)


def run_fetch(command: list[str]) -> int:
    """Run the engine's downloader and show its progress; its exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    except OSError as exc:
        fail(f"cannot start the engine's downloader ({command[0]}): {exc.strerror or exc}")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    failed = False
    assert proc.stdout is not None
    with Progress(*columns, console=err_console, transient=True) as progress:
        tasks: dict[str, Any] = {}
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                err_console.print(line.rstrip(), soft_wrap=True)
                continue
            name, kind = event.get("dataset", "?"), event.get("event")
            if kind == "start":
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=event.get("total"))
                progress.update(tasks[name], total=event.get("total"), completed=event.get("resumed_from", 0))
                resumed = event.get("resumed_from") or 0
                how = f", resuming at {_mib(resumed)}" if resumed else ""
                progress.console.print(f"{name}: downloading {event.get('url')}{how}", soft_wrap=True)
            elif kind == "progress" and name in tasks:
                progress.update(tasks[name], completed=event.get("done", 0), total=event.get("total"))
            elif kind == "retry":
                progress.console.print(
                    Text.assemble((f"{name}: retrying", "yellow"), f" ({event.get('reason')})"),
                    soft_wrap=True,
                )
            elif kind == "verified":
                progress.console.print(f"{name}: archive MD5 {event.get('md5')} matches", soft_wrap=True)
            elif kind == "present":
                console.print(f"{name}: already intact at {event.get('path')}", soft_wrap=True)
            elif kind == "done":
                if name in tasks:
                    progress.remove_task(tasks.pop(name))
                console.print(
                    Text.assemble((f"{name}: ready", "green"), f" at {event.get('path')}"), soft_wrap=True
                )
            elif kind == "failed":
                failed = True
                err_console.print(
                    Text.assemble(("error:", "bold red"), f" {name}: {event.get('message')}"), soft_wrap=True
                )
    code = proc.wait()
    return code if code else (1 if failed else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def report_missing_data(plan: Plan) -> int:
    """``mdtui validate --data``: every experiment's dataset checked by path (the pre-flight of
    ``mdtui run``); experiments missing the same paths are reported together. The count missing."""
    from mdtui.registry.data_presence import data_problem

    grouped: dict[tuple[str, tuple[Path, ...]], list[str]] = {}
    first: dict[tuple[str, tuple[Path, ...]], str] = {}
    for exp in plan.experiments.values():
        problem = data_problem(exp, plan.settings)
        if problem is None:
            continue
        key = (problem.dataset, problem.missing)
        grouped.setdefault(key, []).append(exp.name)
        first.setdefault(key, problem.message)
    for key, names in grouped.items():
        others = f" (and {len(names) - 1} more experiments using it)" if len(names) > 1 else ""
        err_console.print(
            Text.assemble(("missing data:", "bold red"), f" {first[key]}{others}"), soft_wrap=True
        )
    missing_count = sum(len(n) for n in grouped.values())
    if not missing_count:
        console.print(
            Text.assemble(("ok", "green"), " every experiment's dataset is in place"), soft_wrap=True
        )
    return missing_count
