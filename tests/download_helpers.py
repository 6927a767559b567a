"""A loopback dataset mirror for download tests: a tiny CIFAR-10 archive in torchvision's exact
python format, served from 127.0.0.1 with HTTP Range support and faults on demand.

Never the real data, never the network: the archive is a few images per class, so its sums are not
the real ones and every test passes them through an explicit manifest (engine/fetch.py says why
that is the only way to replace them).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import pickle
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

TRAIN_PER_CLASS_PER_BATCH = 2
TEST_PER_CLASS = 3
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch(per_class: int, seed: int) -> bytes:
    """One pickled batch as torchvision's python format holds it: uint8 [N, 3072] and labels."""
    rng = np.random.default_rng(seed)
    labels = [c for c in range(10) for _ in range(per_class)]
    # class-dependent brightness, so a model can learn something in one epoch
    data = np.stack([rng.integers(0, 64, 3072) + 19 * c for c in labels]).astype(np.uint8)
    return pickle.dumps({"batch_label": f"batch {seed}", "labels": labels, "data": data}, protocol=2)


@functools.cache
def cifar10_archive() -> tuple[bytes, dict[str, str]]:
    """(the .tar.gz bytes, MD5 of each unpacked file); the same bytes every time (gzip mtime 0)."""
    files = {f"data_batch_{i}": _batch(TRAIN_PER_CLASS_PER_BATCH, i) for i in range(1, 6)}
    files["test_batch"] = _batch(TEST_PER_CLASS, 99)
    files["batches.meta"] = pickle.dumps({"label_names": NAMES, "num_vis": 3072}, protocol=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    archive = gzip.compress(buffer.getvalue(), mtime=0)
    return archive, {n: hashlib.md5(p).hexdigest() for n, p in files.items()}


@dataclass
class Mirror:
    """What the server serves and how it misbehaves; ``requests`` records (path, Range header)."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    truncate_next: int = 0  # this many responses stop halfway (Content-Length promises the rest)
    corrupt_next: int = 0  # this many responses carry flipped bytes
    honour_range: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            mirror.requests.append((name, self.headers.get("Range")))
            body = mirror.files.get(name)
            if body is None:
                self.send_error(404)
                return
            start = 0
            wanted = self.headers.get("Range")
            if wanted and mirror.honour_range and wanted.startswith("bytes="):
                start = int(wanted[6:].split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
            if mirror.corrupt_next:
                mirror.corrupt_next -= 1
                body = bytes(b ^ 0x5A for b in body[:64]) + body[64:]
            payload = body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if mirror.truncate_next:
                mirror.truncate_next -= 1
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@contextlib.contextmanager
def serve_mirror() -> Iterator[Mirror]:
    """A loopback mirror serving the tiny CIFAR-10 archive under the real archive's name."""
    archive, _ = cifar10_archive()
    state = Mirror(files={"cifar-10-python.tar.gz": archive})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def write_manifest(directory: Path) -> Path:
    """The explicit manifest that vouches for the tiny archive's sums."""
    archive, files = cifar10_archive()
    path = directory / "manifest.json"
    entry = {"archive_md5": hashlib.md5(archive).hexdigest(), "files": files}
    path.write_text(json.dumps({"cifar10": entry}), encoding="utf-8")
    return path
