"""Where each dataset lives under the data root, and how to get it: the manager's ``mdtui data``, its
pre-flight check and the engine's downloader (``engine.fetch``) all read this one table.

Standard library only. Three kinds of dataset:

- *embedded* (``digits``, ``synthetic``): built in, nothing to get;
- *downloadable* (CIFAR-10, CIFAR-100, STL-10): one archive from its authors' site, checked against
  the MD5 sums torchvision records for it and for every file it unpacks (the same sums
  torchvision's own dataset classes check), unpacked where ``engine.data`` reads it;
- *by hand* (``oltr`` lists such as ImageNet-LT, Places-LT, iNaturalist 2018, and image folders):
  their images need a licence or a registration, so ``mdtui data`` says what to obtain and where
  each file must be; presence is checked by the paths the experiment names.

A test checks that the folders and files here are the ones ``engine.data`` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

EMBEDDED = ("digits", "synthetic")


@dataclass(frozen=True)
class Download:
    """One dataset that comes as one archive: where from, what it holds, and the sums to trust."""

    name: str
    title: str
    url: str  # the authors' own copy: the default source
    archive: str  # file name of the archive (also its name on a mirror)
    archive_md5: str
    archive_bytes: int
    folder: str  # what the archive unpacks to, directly under the data root
    files: Mapping[str, str]  # file in ``folder`` -> its MD5: the files the engine reads

    def mirror_url(self, mirror: str | None) -> str:
        """The archive's URL on ``mirror`` (a base URL), or the authors' URL when there is none."""
        return f"{mirror.rstrip('/')}/{self.archive}" if mirror else self.url


# The sums are the ones torchvision's CIFAR10/CIFAR100/STL10 classes check (torchvision/datasets).
DOWNLOADS: dict[str, Download] = {
    "cifar10": Download(
        name="cifar10",
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive="cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        archive_bytes=170_498_071,
        folder="cifar-10-batches-py",
        files={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": Download(
        name="cifar100",
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive="cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        archive_bytes=169_001_437,
        folder="cifar-100-python",
        files={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
    "stl10": Download(
        name="stl10",
        title="STL-10",
        url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        archive="stl10_binary.tar.gz",
        archive_md5="91f7769df0f17e558f3565bffb0c7dfb",
        archive_bytes=2_640_397_119,
        folder="stl10_binary",
        files={
            "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
            "train_y.bin": "5a34089d4802c674881badbb80307741",
            "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
            "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
        },
    ),
}

# The engine reads only these of a downloadable dataset's files (the rest: class names, unlabeled
# STL-10 images); a file outside this list that is missing does not stop a run.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "cifar10": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
    "cifar100": ("train", "test"),
    "stl10": ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"),
}

# What to obtain, by hand, for the list-based long-tail benchmarks (``data.name = "oltr"``), by the
# name ``mdtui data get`` accepts: (title, what to obtain and where). Each list line is
# ``<image path relative to the data root> <label>``.
MANUAL_LISTS: dict[str, tuple[str, str]] = {
    "imagenet_lt": (
        "ImageNet-LT",
        "images: ILSVRC-2012 train and val from https://image-net.org (needs a registration), val sorted "
        "into one folder per class, so that <data root>/train/<wnid>/*.JPEG and "
        "<data root>/val/<wnid>/*.JPEG exist;\n"
        "split lists: ImageNet_LT_train.txt, ImageNet_LT_val.txt, ImageNet_LT_test.txt of Liu et al. 2019 "
        "(OLTR: github.com/zhmiao/OpenLongTailRecognition-OLTR, its 'ImageNet_LT' download) into "
        "<data root>/ImageNet_LT/ (the shipped rx50-imagenet-lt reads ImageNet_LT_train.txt and "
        "ImageNet_LT_test.txt there)",
    ),
    "places_lt": (
        "Places-LT",
        "images: Places365-Standard, small (256x256) images, from http://places2.csail.mit.edu "
        "(needs a registration), unpacked under the data root so that each path of the lists exists "
        "there;\nsplit lists: Places_LT_train.txt, Places_LT_val.txt, Places_LT_test.txt of Liu et al. "
        "2019 (OLTR, its 'Places_LT' download) into <data root>/Places_LT/",
    ),
    "inaturalist2018": (
        "iNaturalist 2018",
        "images: train_val2018 of https://github.com/visipedia/inat_comp (the 2018 competition), "
        "unpacked under the data root so that each path of the lists exists there;\n"
        "split lists: iNaturalist18_train.txt, iNaturalist18_val.txt of Kang et al. 2020 "
        "(github.com/facebookresearch/classifier-balancing) into <data root>/iNaturalist18/ "
        "(a list path containing 'inat' selects iNaturalist's normalisation)",
    ),
}
# Image folders are whatever the user has; ``mdtui data`` says where the experiment looks.
FOLDER_HELP = (
    "one folder per class: <data root>/<train_dir>/<class>/<image> and <data root>/<test_dir>/<class>/<image>"
    " (image_mask also <data root>/<mask_dir>/<image basename>.png, 8-bit grey)"
)


@dataclass(frozen=True)
class Need:
    """One path a dataset needs under the data root; ``kind`` is "file" or "folder"."""

    path: Path
    kind: str


def dataset_name(data: Mapping[str, Any] | str | None) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, Mapping):
        return str(data.get("name") or "digits")
    return "digits"


def needs(data: Mapping[str, Any] | str | None, root: Path | None) -> list[Need] | None:
    """The paths a data block needs, or None when it needs no data root (embedded datasets).

    ``data`` is an experiment's ``data`` block (a bare name or a table), ``root`` the data root it
    resolves to (``engine.schema.config.resolve_data_root``). With no root, the needs are given
    relative to ``Path("<data root>")`` so that messages can still say where things go.
    """
    block = {"name": data} if isinstance(data, str) else dict(data or {})
    name = dataset_name(block)
    if name in EMBEDDED:
        return None
    base = root if root is not None else Path("<data root>")
    if name in DOWNLOADS:
        folder = DOWNLOADS[name].folder
        # The engine also accepts the data root being that folder itself.
        at = base if base.name == folder else base / folder
        return [Need(at / file, "file") for file in REQUIRED_FILES[name]]
    if name == "oltr":
        return [Need(base / block[key], "file") for key in ("train_list", "eval_list") if block.get(key)]
    if name in ("image_folder", "image_mask"):
        dirs = [block.get("train_dir") or "train", block.get("test_dir") or "test"]
        if name == "image_mask" or block.get("mask_dir"):
            dirs.append(block.get("mask_dir") or "masks")
        return [Need(base / d, "folder") for d in dirs]
    return []  # a dataset registered by a plugin: nothing known to check


def missing(data: Mapping[str, Any] | str | None, root: Path | None) -> list[Need]:
    """The needed paths that are not there (every need when there is no data root)."""
    wanted = needs(data, root)
    if not wanted:
        return []
    if root is None:
        return wanted
    return [n for n in wanted if not (n.path.is_file() if n.kind == "file" else n.path.is_dir())]


def manual_key(data: Mapping[str, Any] | str | None) -> str:
    """The ``mdtui data get`` name that explains a by-hand data block (ImageNet-LT lists -> imagenet_lt)."""
    name = dataset_name(data)
    if name != "oltr" or not isinstance(data, Mapping):
        return name
    lists = f"{data.get('train_list', '')} {data.get('eval_list', '')}".lower()
    for key, hint in (("imagenet_lt", "imagenet_lt"), ("places_lt", "places"), ("inaturalist2018", "inat")):
        if hint in lists:
            return key
    return "oltr"


def how_to_get(data: Mapping[str, Any] | str | None) -> str:
    """The fix for a missing dataset, as a user would type it."""
    name = dataset_name(data)
    if name in DOWNLOADS:
        return f"`mdtui data get {name}` downloads it"
    return f"`mdtui data get {manual_key(data)}` says what to obtain and where it goes"


def data_mirror(env: Mapping[str, str] | None = None) -> str | None:
    """``MDTUI_DATA_MIRROR``: a base URL serving the archives under their own names, used instead of
    the authors' sites (the sums stay the ones above unless a manifest is given explicitly)."""
    value = (os.environ if env is None else env).get(MIRROR_ENV, "").strip()
    return value or None


MIRROR_ENV = "MDTUI_DATA_MIRROR"
MANIFEST_ENV = "MDTUI_DATA_MANIFEST"


class ManifestError(ValueError):
    """A manifest file that cannot be read or does not say what it must."""


def manifest_path(given: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The manifest in force: ``given`` (``--manifest``), else ``MDTUI_DATA_MANIFEST``, else None."""
    raw = given or (os.environ if env is None else env).get(MANIFEST_ENV, "").strip()
    return Path(raw).expanduser() if raw else None


def sums_for(source: Download, manifest: Path | None) -> Download:
    """``source`` with the sums of an explicit local manifest's entry for it, when it has one.

    The manifest (JSON ``{"cifar10": {"archive_md5": ..., "files": {name: md5}}}``) is how a mirror
    serving other bytes than the authors' (the tests' tiny archive) is trusted: only by a file the
    user names, never by anything the mirror itself sends.
    """
    if manifest is None:
        return source
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"manifest {manifest}: {exc}") from None
    entry = doc.get(source.name) if isinstance(doc, dict) else None
    if entry is None:
        return source
    if not isinstance(entry, dict) or not isinstance(entry.get("archive_md5"), str):
        raise ManifestError(f"manifest {manifest}: entry {source.name!r} lacks a string 'archive_md5'")
    files = entry.get("files", source.files)
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ManifestError(
            f"manifest {manifest}: {source.name!r} 'files' must map file names to MD5 strings"
        )
    return replace(source, archive_md5=entry["archive_md5"], files=files)
