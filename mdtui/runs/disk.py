"""What a run costs on disk: sizes of run directories and files, and their one text form.

Sizes are apparent sizes (``st_size``, as ``du --apparent-size`` and ``ls -l`` count them): what
deleting a checkpoint gives back on an ordinary file system, and the same number on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def tree_size(path: Path | str) -> int:
    """Bytes of every file under ``path`` (symbolic links are not followed; a missing path is 0)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:  # deleted while we looked
                    continue
    return total


def file_size(path: Path | str) -> int:
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return 0


def fmt_size(size: int | None) -> str:
    """``812 B``, ``45.2 MiB``, ``1.21 GiB``; ``-`` when unknown."""
    if size is None or size < 0:
        return "-"
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
