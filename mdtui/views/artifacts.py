"""What a run produced, as the Artifacts tab lists it: the engine's artifact events and the files.

A plain run announces few artifacts as events (the Model Doctor and the kernels do), yet its folder
holds ``artifacts/`` (curves.png, per_class.png, confusion_matrix.json, ...) and ``checkpoints/``
(best.pt, last.pt). Both are listed: announced items first, with the engine's summary, then every
file found there that no event named, with its size (a checkpoint also with the epoch it holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.schema.events import RunState
from mdtui.runs.disk import fmt_size

FOLDERS = ("artifacts", "checkpoints")
KINDS = {
    ".png": "plot",
    ".svg": "plot",
    ".json": "json",
    ".npz": "array",
    ".npy": "array",
    ".pt": "checkpoint",
}
MAX_FILES = 500  # a folder with thousands of files is listed in part (the tab says how many are left)


@dataclass(frozen=True)
class Artifact:
    kind: str
    path: str  # relative to the run directory when it lies inside it
    summary: Any = None


def relative_path(path: str, run_dir: Path) -> str:
    """An artifact's path as seen from its run directory (absolute only when it lies elsewhere)."""
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        try:
            return str(Path(path).resolve().relative_to(run_dir.resolve()))
        except (ValueError, OSError):
            return path


def run_artifacts(run_dir: Path, state: RunState) -> list[Artifact]:
    """The engine's artifact events, then the files of ``artifacts/`` and ``checkpoints/`` no event named."""
    out = [
        Artifact(
            str(item.get("kind", "")), relative_path(str(item.get("path", "")), run_dir), item.get("summary")
        )
        for item in state.artifacts
    ]
    named = {a.path for a in out}
    saved = {relative_path(str(c.get("path", "")), run_dir): c for c in state.checkpoints}
    files = 0
    for folder in FOLDERS:
        base = run_dir / folder
        try:
            found = sorted(p for p in base.rglob("*") if p.is_file())
        except OSError:
            continue
        for path in found:
            rel = str(path.relative_to(run_dir))
            if rel in named:
                continue
            files += 1
            if files > MAX_FILES:
                out.append(Artifact("…", f"{folder}/", f"{len(found)} files in all; see the folder"))
                break
            out.append(
                Artifact(
                    KINDS.get(path.suffix.lower(), path.suffix.lstrip(".") or "file"),
                    rel,
                    _file_summary(path, saved.get(rel)),
                )
            )
    return out


def _file_summary(path: Path, checkpoint: dict[str, Any] | None) -> str:
    """ "44.1 KB", or for a checkpoint "1.2 MB · epoch 3 · best"."""
    try:
        parts = [fmt_size(path.stat().st_size)]
    except OSError:
        parts = []
    if checkpoint is not None and isinstance(checkpoint.get("epoch"), int):
        parts.append(f"epoch {checkpoint['epoch'] + 1}")  # 0-based in events, 1-based on screen
        if checkpoint.get("is_best"):
            parts.append("best")
    return " · ".join(parts)
