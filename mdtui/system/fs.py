"""Small filesystem helpers every manager module shares: atomic writes, safe names, file locks.

A run directory is the source of truth (docs/results.md), so files other processes read while
they are being replaced (run.json, exit.json, RESULTS.md) are never written in place: a reader sees
either the old or the new content, never half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,@\-\[\]]+")


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory + fsync + rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates 0600; results and run records are meant for the whole team (umask decides).
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """``atomic_write_text`` of pretty JSON (NaN is refused: JSON has none)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The parsed JSON at ``path``, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk for the write to survive a power cut.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sanitize_name(name: str, *, max_len: int = 120) -> str:
    """A directory name for ``name``: no separators, no ``..``, no spaces or control characters.

    Sweep names such as ``r32-refl[loss.threshold=0.4]`` stay readable; anything else becomes ``_``.
    """
    cleaned = _UNSAFE.sub("_", name.strip())
    cleaned = cleaned.replace("..", "_")
    cleaned = cleaned.strip("._") or "run"
    return cleaned[:max_len]


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, shared: bool = False) -> Iterator[int]:
    """Hold an ``fcntl.flock`` on ``path`` (created if missing) for the ``with`` block."""
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """Take an exclusive non-blocking lock; return its fd (keep it open to hold it) or None if held."""
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line with a single ``write`` on an O_APPEND descriptor (concurrent appends stay whole)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


GITIGNORE_EVERYTHING = (
    "# Written by mdtui: this directory holds runtime state (locks, the run index, logs, checkpoints).\n"
    "# The line below hides all of it from git; edit or delete this file to track some of it.\n"
    "*\n"
)


def git_ignored_dir(path: str | os.PathLike[str], *, only_if_new: bool = False) -> Path:
    """Create directory ``path`` (if needed) with a ``.gitignore`` that hides it from git.

    An existing ``.gitignore`` there is the user's and is kept. With ``only_if_new`` the file is
    written only when this call creates the directory, so a directory the user already has (and
    may track) is left as it is.
    """
    target = Path(path)
    if only_if_new and target.is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    ignore = target / ".gitignore"
    if not ignore.exists():
        with contextlib.suppress(OSError):  # a read-only share still works, git just sees the files
            atomic_write_text(ignore, GITIGNORE_EVERYTHING)
    return target
