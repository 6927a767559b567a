"""Download a dataset where the engine reads it: ``python -m engine.fetch NAME... --root ROOT``.

The manager's ``mdtui data get`` runs this (the manager never imports torch or torchvision) and
shows its progress. stdout carries one JSON object per line, nothing else:

    {"event": "present"|"start"|"progress"|"retry"|"verified"|"unpacked"|"done"|"failed", "dataset": ...}

What a download must survive, and how:

- *interrupted transfer* (a dropped connection, a short response, Ctrl-C): the bytes so far stay in
  ``<root>/.mdtui-downloads/<archive>.part`` and the next attempt (or the next ``mdtui data get``)
  asks the server for the rest with an HTTP Range request; a server that ignores Range sends it all
  again and the part file starts over;
- *corrupted archive*: the whole archive is checked against its MD5 before anything is unpacked; a
  mismatch deletes it and downloads again, at most ``--attempts`` times, then gives up (exit 1);
- *half-unpacked folder*: the archive unpacks into a scratch folder, every file the engine reads is
  checked against its own MD5 there, and only then is the folder moved into place, so the engine
  never sees a partial dataset.

Checksums and unpacking are torchvision's own (``torchvision.datasets.utils``: ``calculate_md5``,
``extract_archive``), against the sums torchvision's dataset classes carry (``engine.schema.datasets``).
The transfer is ours: torchvision's ``download_url`` cannot resume, and an interrupted 2.6 GB STL-10
should not start over.

``--mirror URL`` (or ``MDTUI_DATA_MIRROR``) fetches ``URL/<archive name>`` instead of the authors'
site; the expected sums stay the real ones, so a mirror must serve byte-identical archives. Only an
explicit local ``--manifest FILE`` (or ``MDTUI_DATA_MANIFEST``; JSON: ``{"cifar10": {"archive_md5":
..., "files": {name: md5}}}``) replaces them: that is how the tests serve a small archive of the
same format from 127.0.0.1. A manifest is never read from the mirror itself, so a mirror cannot
vouch for its own files.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from engine.schema.datasets import DOWNLOADS, Download, ManifestError, data_mirror, manifest_path, sums_for

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SCRATCH = ".mdtui-downloads"
CHUNK = 1 << 16
PROGRESS_EVERY_S = 0.25
TIMEOUT_S = 60.0
USER_AGENT = "mdtui-engine-fetch"


class FetchError(Exception):
    """A download that cannot succeed by trying again (HTTP 404, a full disk, a bad manifest)."""


class Interrupted(Exception):
    """The transfer stopped early; the bytes so far are kept and the next attempt resumes."""


def emit(event: str, dataset: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "dataset": dataset, **fields}), flush=True)


def md5_of(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(path)


def intact(folder: Path, source: Download) -> list[str]:
    """The files of ``folder`` that are missing or do not match their sums (empty: intact)."""
    return [
        name
        for name, md5 in source.files.items()
        if not (folder / name).is_file() or md5_of(folder / name) != md5
    ]


def transfer(url: str, part: Path, dataset: str) -> None:
    """Fetch ``url`` into ``part``, resuming from its current length; Interrupted when cut short."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: the part is complete (or too long)
            return
        if 500 <= exc.code < 600:
            raise Interrupted(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Interrupted(f"{url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file: start the part over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        emit("start", dataset, url=url, total=total, resumed_from=have if resumed else 0)
        done, last = have, 0.0
        with part.open("ab" if resumed else "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                    raise Interrupted(f"{url}: transfer stopped after {done} bytes ({exc!r})") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise FetchError(f"cannot write {part}: {exc.strerror or exc}") from None
                done += len(chunk)
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S:
                    emit("progress", dataset, done=done, total=total)
                    last = now
        emit("progress", dataset, done=done, total=total)
        if total is not None and done < total:
            raise Interrupted(f"{url}: transfer stopped after {done} of {total} bytes")


def unpack(archive: Path, root: Path, source: Download) -> Path:
    """Unpack into a scratch folder, check every file there, then move the folder into place."""
    from torchvision.datasets.utils import extract_archive

    scratch = Path(tempfile.mkdtemp(prefix=f"unpack-{source.name}-", dir=archive.parent))
    try:
        extract_archive(archive, scratch)
        unpacked = scratch / source.folder
        bad = intact(unpacked, source)
        if bad:
            raise FetchError(
                f"{archive.name} matched its sum but unpacked without an intact {', '.join(bad)}"
            )
        target = root / source.folder
        if target.exists():  # an incomplete or damaged copy (an intact one was skipped earlier)
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(unpacked, target)
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fetch(source: Download, root: Path, mirror: str | None, attempts: int) -> Path:
    """Make ``<root>/<folder>`` hold the intact dataset; return that folder."""
    target = root / source.folder
    if target.is_dir() and not intact(target, source):
        emit("present", source.name, path=str(target))
        return target
    downloads = root / SCRATCH
    downloads.mkdir(parents=True, exist_ok=True)
    part, archive = downloads / f"{source.archive}.part", downloads / source.archive
    url = source.mirror_url(mirror)
    for attempt in range(1, attempts + 1):
        if not archive.exists():
            try:
                transfer(url, part, source.name)
            except Interrupted as exc:
                if attempt == attempts:
                    raise FetchError(
                        f"{exc}; gave up after {attempts} attempts (run again to resume)"
                    ) from None
                emit("retry", source.name, attempt=attempt, reason=str(exc))
                time.sleep(min(2.0 ** (attempt - 1), 10.0))
                continue
            os.replace(part, archive)
        digest = md5_of(archive)
        if digest == source.archive_md5:
            emit("verified", source.name, md5=digest)
            path = unpack(archive, root, source)
            archive.unlink()
            emit("unpacked", source.name, path=str(path))
            return path
        archive.unlink()  # never unpacked, never kept: the next attempt downloads it whole
        reason = f"{source.archive}: MD5 {digest}, expected {source.archive_md5} (corrupted download)"
        if attempt == attempts:
            raise FetchError(f"{reason}; gave up after {attempts} attempts")
        emit("retry", source.name, attempt=attempt, reason=reason)
    raise FetchError(f"{source.archive}: no attempt left")  # pragma: no cover - attempts >= 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"one of {', '.join(DOWNLOADS)}")
    parser.add_argument("--root", required=True, help="the data root (folders are made under it)")
    parser.add_argument("--mirror", default=None, help="base URL serving the archives by name")
    parser.add_argument("--manifest", default=None, help="local JSON replacing the expected sums")
    parser.add_argument("--attempts", type=int, default=3)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in DOWNLOADS]
    if unknown:
        print(f"cannot download {', '.join(unknown)}: one of {', '.join(DOWNLOADS)}", file=sys.stderr)
        return EXIT_USAGE
    root = Path(args.root).expanduser().resolve()
    mirror = args.mirror or data_mirror()
    status = EXIT_OK
    for name in args.names:
        try:
            source = sums_for(DOWNLOADS[name], manifest_path(args.manifest))
            path = fetch(source, root, mirror, max(1, args.attempts))
            emit("done", name, path=str(path))
        except (FetchError, ManifestError) as exc:
            emit("failed", name, message=str(exc))
            status = EXIT_FAILED
        except OSError as exc:
            emit("failed", name, message=f"{exc.filename or root}: {exc.strerror or exc}")
            status = EXIT_FAILED
        except KeyboardInterrupt:  # Ctrl-C reaches the whole group: the part file stays for a resume
            emit("failed", name, message="interrupted; `mdtui data get` again resumes the download")
            return EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())
