"""GPU facts: NVML through nvidia-ml-py, a fake backend for tests and demos, or the CPU alone.

`list_devices()` is a point-in-time snapshot; reservations live in the scheduler's ledger. The
fake backend is re-read on every call (`MDTUI_FAKE_GPUS`) so tests can change it between polls:

* an integer N: N idle 24 GiB GPUs;
* a JSON document: a list of devices, or `{"devices": [...]}`;
* a path to a `.json` or `.toml` file holding the same (TOML: `[[devices]]` tables).

A device entry: `name`, `memory_total_mb`, `memory_used_mb` (default: the sum of its processes),
`utilization` (percent), `uuid`, and `processes = [{pid, owner, memory_mb, name}]`; `mig = [entries]`
puts the GPU in MIG mode with these instances.

Which devices are listed follows ``CUDA_VISIBLE_DEVICES`` inherited from the environment (a Slurm
job's or a container's allocation), read as CUDA reads it: GPU indices in PCI bus order (NVML's),
GPU UUIDs or MIG UUIDs (unique prefixes allowed), and nothing from the first entry that names no
device. Device ids stay NVML's indices ("0", "3"; "0:1" for MIG instance 1 of GPU 0 as
``nvidia-smi -L`` numbers it) whatever the allocation, and children are handed UUIDs
(``cuda_visible_devices``), which mean the same GPU under any enumeration. The fake backend reads
``MDTUI_FAKE_CUDA_VISIBLE_DEVICES`` instead, so a developer's shell or a GPU host cannot change what
tests see.
"""

from __future__ import annotations

import dataclasses
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
FAKE_VISIBLE_ENV = "MDTUI_FAKE_CUDA_VISIBLE_DEVICES"  # the fake backend's inherited CUDA_VISIBLE_DEVICES
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
    id: str  # NVML index as a string ("0", "1"), "<index>:<n>" for MIG instance n, or "cpu"
    uuid: str  # "GPU-..." or, for a MIG instance, "MIG-..."
    name: str
    memory_used_mb: int
    memory_total_mb: int
    utilization: int  # percent, 0-100
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)
    parent_uuid: str = ""  # a MIG instance: the UUID of its GPU

    @property
    def gpu_index(self) -> str:
        """The NVML index of the physical GPU (a MIG instance's GPU)."""
        return self.id.split(":", 1)[0]

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
            "parent_uuid": self.parent_uuid or None,
            "processes": [
                {"pid": p.pid, "owner": p.owner, "memory_mb": p.memory_mb, "name": p.name}
                for p in self.processes
            ],
        }


def list_devices() -> list[Device]:
    """The devices of this machine: the fake backend when set, else NVML, else the CPU alone; GPUs
    outside an inherited ``CUDA_VISIBLE_DEVICES`` are not ours and not listed."""
    fake = os.environ.get(FAKE_ENV, "").strip()
    if fake:
        return visible_devices(fake_devices(fake), os.environ.get(FAKE_VISIBLE_ENV))
    gpus = visible_devices(_nvml_devices(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return gpus if gpus else [cpu_device()]


def backend_name() -> str:
    if os.environ.get(FAKE_ENV, "").strip():
        return "fake"
    return "nvml" if visible_devices(_nvml_devices(), os.environ.get("CUDA_VISIBLE_DEVICES")) else "cpu"


def cuda_visible_devices(ids: list[str]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a child given the devices ``ids``: their UUIDs, which name the
    same GPU (or MIG instance) under any enumeration order and whatever the parent inherited.
    An id that is not listed now (no NVML, a device gone) is passed as it is: an NVML index."""
    wanted = [d for d in ids if d and d != CPU_ID]
    if not wanted:
        return ""
    try:
        uuids = {d.id: d.uuid for d in list_devices() if not d.is_cpu}
    except GpuConfigError:
        uuids = {}
    return ",".join(uuids.get(d, d) for d in wanted)


# --------------------------------------------------------------------------------------- visibility


def visible_devices(devices: list[Device], value: str | None) -> list[Device]:
    """The devices a process sees under ``CUDA_VISIBLE_DEVICES=value`` (None: unset, all of them).

    As CUDA does: the entries are read in order and the first one that names no device ends the
    list (so "" shows none). A GPU index or UUID brings all of a MIG GPU's instances.
    """
    if value is None:
        return devices
    chosen: set[str] = set()
    for entry in value.split(","):
        matched = _entry_devices(entry.strip(), devices)
        if not matched:
            break
        chosen.update(d.id for d in matched)
    return [d for d in devices if d.id in chosen]


def _entry_devices(entry: str, devices: list[Device]) -> list[Device]:
    """The devices one ``CUDA_VISIBLE_DEVICES`` entry names (none when it is invalid or ambiguous)."""
    if entry.isdigit():
        return [d for d in devices if not d.is_cpu and d.gpu_index == str(int(entry))]
    if entry.startswith("GPU-"):
        gpus = {d.parent_uuid or d.uuid for d in devices if (d.parent_uuid or d.uuid).startswith(entry)}
        if len(gpus) != 1:  # CUDA takes a unique prefix only
            return []
        return [d for d in devices if (d.parent_uuid or d.uuid) in gpus]
    if entry.startswith("MIG-"):
        migs = [d for d in devices if d.parent_uuid and d.uuid.startswith(entry)]
        return migs if len(migs) == 1 else []
    return []


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
        gpu = _fake_device(index, entry, where)
        migs = entry.get("mig")
        if migs is None:
            devices.append(gpu)
            continue
        if not isinstance(migs, list) or not all(isinstance(m, dict) for m in migs):
            raise GpuConfigError(f"{where}: device {index}: mig must be a list of tables/objects")
        for n, mig in enumerate(migs):  # a GPU in MIG mode runs nothing itself: its instances do
            instance = _fake_device(
                index, {"name": f"{gpu.name} MIG", "uuid": f"MIG-fake-{index:04d}-{n}", **mig}, where
            )
            devices.append(dataclasses.replace(instance, id=f"{gpu.id}:{n}", parent_uuid=gpu.uuid))
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
            devices.extend(_nvml_gpu(nvml, index))
        except Exception:  # a GPU fallen off the bus must not hide the others
            continue
    return devices


def _nvml_gpu(nvml: Any, index: int) -> list[Device]:
    """GPU ``index`` as one device, or its MIG instances when it is in MIG mode (CUDA cannot run
    on a MIG GPU as a whole: listing it would offer one device of the whole memory that none has)."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    instances = _mig_instances(nvml, handle)
    if instances is None:
        return [_nvml_device(nvml, handle, str(index))]
    parent = _text(nvml.nvmlDeviceGetUUID(handle))
    devices = []
    for n, mig in instances:
        try:
            devices.append(_nvml_device(nvml, mig, f"{index}:{n}", parent))
        except Exception:  # one broken instance must not hide its siblings
            continue
    return devices


def _mig_instances(nvml: Any, handle: Any) -> list[tuple[int, Any]] | None:
    """(number, handle) of each MIG instance of a GPU in MIG mode; None when MIG is off or the GPU
    (or driver) does not know MIG."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except Exception:  # NVML_ERROR_NOT_SUPPORTED: not MIG-capable
        return None
    if current != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
        return None
    instances = []
    for n in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            instances.append((n, nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, n)))
        except Exception:  # NVML_ERROR_NOT_FOUND: no instance created in this slot
            continue
    return instances


def _nvml_device(nvml: Any, handle: Any, device_id: str, parent_uuid: str = "") -> Device:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # not supported on some boards / MIG
        utilization = 0
    return Device(
        id=device_id,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_used_mb=int(memory.used) >> 20,
        memory_total_mb=int(memory.total) >> 20,
        utilization=utilization,
        processes=_nvml_processes(nvml, handle),
        parent_uuid=parent_uuid,
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
