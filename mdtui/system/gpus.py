"""GPU facts: NVML through nvidia-ml-py, a fake backend for tests and demos, or the CPU alone.

`list_devices()` is a point-in-time snapshot; reservations live in the scheduler's ledger. The
fake backend is re-read on every call (`MDTUI_FAKE_GPUS`) so tests can change it between polls:

* an integer N: N idle 24 GiB GPUs;
* a JSON document: a list of devices, or `{"devices": [...]}`;
* a path to a `.json` or `.toml` file holding the same (TOML: `[[devices]]` tables).

A device entry: `name`, `memory_total_mb`, `memory_used_mb` (default: the sum of its processes),
`utilization` (percent), `uuid`, and `processes = [{pid, owner, memory_mb, name}]`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FAKE_ENV = "MDTUI_FAKE_GPUS"
FAKE_DEFAULT_MEMORY_MB = 24576
CPU_ID = "cpu"


class GpuConfigError(ValueError):
    """MDTUI_FAKE_GPUS does not describe devices; the message says what was expected."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    owner: str
    memory_mb: int
    name: str = ""


@dataclass(frozen=True)
class Device:
    id: str  # NVML index as a string ("0", "1"), or "cpu"
    uuid: str
    name: str
    memory_used_mb: int
    memory_total_mb: int
    utilization: int  # percent, 0-100
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)

    @property
    def memory_free_mb(self) -> int:
        return max(0, self.memory_total_mb - self.memory_used_mb)

    @property
    def is_cpu(self) -> bool:
        return self.id == CPU_ID

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "name": self.name,
            "memory_used_mb": self.memory_used_mb,
            "memory_total_mb": self.memory_total_mb,
            "memory_free_mb": self.memory_free_mb,
            "utilization": self.utilization,
            "processes": [
                {"pid": p.pid, "owner": p.owner, "memory_mb": p.memory_mb, "name": p.name}
                for p in self.processes
            ],
        }


def list_devices() -> list[Device]:
    """The devices of this machine: the fake backend when set, else NVML, else the CPU alone."""
    fake = os.environ.get(FAKE_ENV, "").strip()
    if fake:
        return fake_devices(fake)
    gpus = _nvml_devices()
    return gpus if gpus else [cpu_device()]


def backend_name() -> str:
    if os.environ.get(FAKE_ENV, "").strip():
        return "fake"
    return "nvml" if _nvml_devices() else "cpu"


def cpu_device() -> Device:
    total, used = 0, 0
    try:
        import psutil

        mem = psutil.virtual_memory()
        total, used = mem.total >> 20, (mem.total - mem.available) >> 20
    except Exception:  # psutil missing or /proc unreadable: report unknown memory as zero
        pass
    return Device(CPU_ID, CPU_ID, "CPU", used, total, 0, ())


# --------------------------------------------------------------------------------------- fake backend


def fake_devices(spec: str) -> list[Device]:
    """Parse a MDTUI_FAKE_GPUS value: an integer, a JSON document, or a .json/.toml file path."""
    spec = spec.strip()
    if spec.isdigit():
        return [_fake_device(i, {}) for i in range(int(spec))]
    if spec[:1] in "[{":
        try:
            document: Any = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise GpuConfigError(f"{FAKE_ENV} is not valid JSON: {exc}") from None
        return _fake_from_document(document, FAKE_ENV)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise GpuConfigError(
            f"{FAKE_ENV}={spec!r} is neither a number of GPUs, a JSON list of devices, nor an existing "
            ".json/.toml file"
        )
    text = path.read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise GpuConfigError(f"{path}: cannot parse the fake GPU description: {exc}") from None
    return _fake_from_document(document, str(path))


def _fake_from_document(document: Any, where: str) -> list[Device]:
    if isinstance(document, dict):
        document = document.get("devices", document.get("gpus"))
    if not isinstance(document, list):
        raise GpuConfigError(f"{where}: expected a list of devices (or a table with a 'devices' list)")
    devices = []
    for index, entry in enumerate(document):
        if not isinstance(entry, dict):
            raise GpuConfigError(f"{where}: device {index} must be a table/object, got {entry!r}")
        devices.append(_fake_device(index, entry, where))
    return devices


def _fake_device(index: int, entry: dict[str, Any], where: str = FAKE_ENV) -> Device:
    try:
        processes = tuple(
            GpuProcess(
                pid=int(p.get("pid", 0)),
                owner=str(p.get("owner", "?")),
                memory_mb=int(p.get("memory_mb", 0)),
                name=str(p.get("name", "")),
            )
            for p in entry.get("processes", ())
        )
        total = int(entry.get("memory_total_mb", FAKE_DEFAULT_MEMORY_MB))
        used = int(entry.get("memory_used_mb", sum(p.memory_mb for p in processes)))
        utilization = int(entry.get("utilization", 0))
    except (TypeError, ValueError, AttributeError) as exc:
        raise GpuConfigError(
            f"{where}: device {index}: numbers expected for memory_total_mb, memory_used_mb, utilization "
            f"and processes[].pid/memory_mb ({exc})"
        ) from None
    return Device(
        id=str(entry.get("id", index)),
        uuid=str(entry.get("uuid", f"GPU-fake-{index:04d}")),
        name=str(entry.get("name", "Fake GPU")),
        memory_used_mb=min(used, total),
        memory_total_mb=total,
        utilization=max(0, min(100, utilization)),
        processes=processes,
    )


# --------------------------------------------------------------------------------------- NVML backend

_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {"tried": False, "module": None}


def _nvml() -> Any | None:
    """The initialised pynvml module, or None without a driver; initialised once per process."""
    with _nvml_lock:
        if not _nvml_state["tried"]:
            _nvml_state["tried"] = True
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml_state["module"] = pynvml
            except Exception:  # no library, no driver, no permission: the CPU is the only device
                _nvml_state["module"] = None
        return _nvml_state["module"]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nvml_devices() -> list[Device]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        count = nvml.nvmlDeviceGetCount()
    except Exception:
        return []
    devices = []
    for index in range(count):
        try:
            devices.append(_nvml_device(nvml, index))
        except Exception:  # a GPU fallen off the bus must not hide the others
            continue
    return devices


def _nvml_device(nvml: Any, index: int) -> Device:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # not supported on some boards / MIG
        utilization = 0
    return Device(
        id=str(index),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_used_mb=int(memory.used) >> 20,
        memory_total_mb=int(memory.total) >> 20,
        utilization=utilization,
        processes=_nvml_processes(nvml, handle),
    )


def _nvml_processes(nvml: Any, handle: Any) -> tuple[GpuProcess, ...]:
    seen: dict[int, GpuProcess] = {}
    for query in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
        try:
            entries = query(handle)
        except Exception:
            continue
        for entry in entries:
            pid = int(entry.pid)
            memory = entry.usedGpuMemory
            # NVML reports None / a sentinel when memory is not attributable (containers, MIG)
            memory_mb = int(memory) >> 20 if isinstance(memory, int) and memory < (1 << 60) else 0
            if pid not in seen:
                owner, name = _process_owner(pid)
                seen[pid] = GpuProcess(pid, owner, memory_mb, name)
    return tuple(seen.values())


def _process_owner(pid: int) -> tuple[str, str]:
    """(owner, name) of a pid; "?" when it is in another pid namespace or gone (NVML gives host pids)."""
    try:
        import psutil

        process = psutil.Process(pid)
        return process.username(), process.name()
    except Exception:
        return "?", ""
