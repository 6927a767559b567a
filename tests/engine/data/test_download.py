"""engine.fetch against a loopback mirror: the result trains; a cut or corrupted download is never used."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from download_helpers import Mirror, cifar10_archive, serve_mirror, write_manifest

from engine import fetch
from engine.data import cifar, stl10
from engine.schema.datasets import DOWNLOADS, REQUIRED_FILES, missing
from engine.schema.validate import from_dict
from engine.sinks import ListSink
from engine.train import run
from tests.engine.engine_helpers import TINY_DATA  # noqa: F401 - its import pins torch to one thread


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    with serve_mirror() as state:
        yield state


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch.time, "sleep", lambda _s: None)


def get(root, mirror, *extra: str, manifest=True) -> int:
    args = ["cifar10", "--root", str(root), "--mirror", mirror.url, *extra]
    if manifest:
        args += ["--manifest", str(write_manifest(root.parent))]
    return fetch.main(args)


def events(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_download_unpacks_where_the_engine_reads_and_it_trains(tmp_path, mirror, capsys):
    root = tmp_path / "data"
    code = get(root, mirror)
    seen = events(capsys)
    assert code == 0, seen
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "start" and "progress" in kinds and kinds[-3:] == ["verified", "unpacked", "done"]
    assert missing("cifar10", root) == []
    assert not (root / fetch.SCRATCH / "cifar-10-python.tar.gz").exists()  # no archive left behind
    cfg = from_dict(
        {
            "run_id": "fetched",
            "device": "cpu",
            "epochs": 1,
            "batch_size": 20,
            "model": "resnet32",
            # read from the downloaded files; resized at load so that the epoch takes a moment
            "data": {"name": "cifar10", "root": str(root), "num_workers": 0, "image_size": 8},
            "optim": {"name": "sgd", "lr": 0.05},
        }
    )
    sink = ListSink()
    assert run(cfg, tmp_path / "run", sink) == "completed", sink.events[-1]
    started = sink.of_type("run_started")[0]
    assert started["config"]["data"]["name"] == "cifar10"
    assert len(sink.of_type("epoch")[0]["eval"]["per_class"]) == 10

    # a second get finds it intact and downloads nothing
    mirror.requests.clear()
    assert get(root, mirror) == 0
    assert [e["event"] for e in events(capsys)] == ["present", "done"] and mirror.requests == []


def test_a_cut_transfer_resumes_with_a_range_request(tmp_path, mirror, capsys):
    mirror.truncate_next = 1
    code = get(tmp_path / "data", mirror)
    seen = events(capsys)
    assert code == 0, seen
    assert [e["event"] for e in seen].count("retry") == 1
    first, second = mirror.requests
    assert first[1] is None and second[1] is not None and second[1].startswith("bytes=")
    resumed = [e for e in seen if e["event"] == "start"][1]["resumed_from"]
    assert resumed == len(cifar10_archive()[0]) // 2
    assert missing("cifar10", tmp_path / "data") == []


def test_a_server_ignoring_range_sends_it_whole_and_the_part_starts_over(tmp_path, mirror, capsys):
    mirror.truncate_next, mirror.honour_range = 1, False
    assert get(tmp_path / "data", mirror) == 0
    starts = [e for e in events(capsys) if e["event"] == "start"]
    assert [s["resumed_from"] for s in starts] == [0, 0]
    assert missing("cifar10", tmp_path / "data") == []


def test_a_corrupted_download_is_fetched_again_never_unpacked(tmp_path, mirror, capsys):
    mirror.corrupt_next = 1
    code = get(tmp_path / "data", mirror)
    seen = events(capsys)
    assert code == 0
    retry = next(e for e in seen if e["event"] == "retry")
    assert "corrupted download" in retry["reason"]
    assert len(mirror.requests) == 2 and mirror.requests[1][1] is None  # whole again, not resumed


def test_a_download_that_stays_corrupt_is_refused(tmp_path, mirror, capsys):
    mirror.corrupt_next = 99
    root = tmp_path / "data"
    code = get(root, mirror, "--attempts", "2")
    seen = events(capsys)
    assert code == 1 and seen[-1]["event"] == "failed" and "gave up after 2" in seen[-1]["message"]
    assert not (root / "cifar-10-batches-py").exists()
    assert list((root / fetch.SCRATCH).iterdir()) == []  # the bad archive is not kept either


def test_a_mirror_cannot_replace_the_real_sums(tmp_path, mirror, capsys):
    """Without an explicit manifest a mirror must serve the authors' archive byte for byte."""
    root = tmp_path / "data"
    code = get(root, mirror, "--attempts", "1", manifest=False)
    seen = events(capsys)
    assert code == 1 and DOWNLOADS["cifar10"].archive_md5 in seen[-1]["message"]
    assert not (root / "cifar-10-batches-py").exists()


def test_the_table_names_what_the_engine_reads():
    assert DOWNLOADS["cifar10"].folder == cifar.CIFAR10.folder
    assert DOWNLOADS["cifar100"].folder == cifar.CIFAR100.folder
    assert DOWNLOADS["stl10"].folder == stl10.FOLDER
    for name, layout in (("cifar10", cifar.CIFAR10), ("cifar100", cifar.CIFAR100)):
        assert REQUIRED_FILES[name] == (*layout.train_files, *layout.test_files)
        assert layout.meta_file in DOWNLOADS[name].files
    assert set(REQUIRED_FILES["stl10"]) <= set(DOWNLOADS["stl10"].files)
    for name, files in REQUIRED_FILES.items():
        assert set(files) <= set(DOWNLOADS[name].files)
