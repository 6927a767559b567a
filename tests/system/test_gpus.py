"""GPU facts (mdtui/gpus.py): the fake backend's forms, NVML parsing, and the CPU fallback."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from mdtui.system import gpus


def test_integer_fake_gives_idle_24gib_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpus.FAKE_ENV, "3")
    devices = gpus.list_devices()
    assert [d.id for d in devices] == ["0", "1", "2"]
    assert all(d.memory_total_mb == 24576 and d.memory_used_mb == 0 and d.utilization == 0 for d in devices)
    assert len({d.uuid for d in devices}) == 3
    assert gpus.backend_name() == "fake"


def test_json_fake_with_foreign_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = [
        {
            "name": "H100",
            "memory_total_mb": 81920,
            "utilization": 95,
            "processes": [{"pid": 1234, "owner": "alice", "memory_mb": 70000}],
        },
        {"name": "H100", "memory_total_mb": 81920, "memory_used_mb": 500},
    ]
    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps(spec))
    busy, idle = gpus.list_devices()
    assert busy.name == "H100" and busy.utilization == 95
    assert busy.memory_used_mb == 70000  # defaults to the sum of its processes
    assert busy.memory_free_mb == 81920 - 70000
    assert busy.processes == (gpus.GpuProcess(1234, "alice", 70000, ""),)
    assert idle.memory_used_mb == 500 and idle.processes == ()
    assert busy.to_dict()["processes"][0]["owner"] == "alice"


def test_fake_file_is_reread_on_every_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({"devices": [{"memory_used_mb": 100}]}))
    monkeypatch.setenv(gpus.FAKE_ENV, str(path))
    assert gpus.list_devices()[0].memory_used_mb == 100
    path.write_text(json.dumps({"devices": [{"memory_used_mb": 20000}, {}]}))
    devices = gpus.list_devices()
    assert [d.memory_used_mb for d in devices] == [20000, 0]


def test_toml_fake_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "gpus.toml"
    path.write_text(
        '[[devices]]\nname = "A100"\nmemory_total_mb = 40960\n'
        '[[devices.processes]]\npid = 77\nowner = "bob"\nmemory_mb = 30000\n'
        '[[devices]]\nname = "A100"\nuuid = "GPU-abc"\n'
    )
    monkeypatch.setenv(gpus.FAKE_ENV, str(path))
    first, second = gpus.list_devices()
    assert first.memory_used_mb == 30000 and first.processes[0].owner == "bob"
    assert second.uuid == "GPU-abc" and second.id == "1"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("[{", "not valid JSON"),
        ('{"devices": 3}', "expected a list of devices"),
        ('[{"memory_total_mb": "lots"}]', "numbers expected"),
        ("/no/such/file.json", "neither a number"),
    ],
)
def test_bad_fake_spec_says_what_is_expected(monkeypatch: pytest.MonkeyPatch, spec: str, words: str) -> None:
    monkeypatch.setenv(gpus.FAKE_ENV, spec)
    with pytest.raises(gpus.GpuConfigError, match=words):
        gpus.list_devices()


def test_no_driver_and_no_fake_means_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_nvml", lambda: None)
    devices = gpus.list_devices()
    assert [d.id for d in devices] == ["cpu"] and devices[0].is_cpu
    assert gpus.backend_name() == "cpu"


def test_nvml_init_failure_degrades_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_init() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    fake_module = types.SimpleNamespace(nvmlInit=broken_init)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_module)
    monkeypatch.setattr(gpus, "_nvml_state", {"tried": False, "module": None})
    assert [d.id for d in gpus.list_devices()] == ["cpu"]


def _fake_nvml(*, broken_index: int | None = None) -> types.SimpleNamespace:
    """A stand-in pynvml module with two GPUs; one process with unknown memory (as in containers)."""
    mib = 1 << 20

    def handle(index: int) -> int:
        if index == broken_index:
            raise RuntimeError("GPU is lost")
        return index

    def processes(h: int) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=999_999_999, usedGpuMemory=None if h else 5000 * mib)]

    def graphics(h: int) -> list[types.SimpleNamespace]:
        raise RuntimeError("not supported")

    return types.SimpleNamespace(
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=(h + 1) * 1000 * mib, total=80000 * mib),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=10 * h),
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}".encode(),
        nvmlDeviceGetName=lambda h: b"NVIDIA H100",
        nvmlDeviceGetComputeRunningProcesses=processes,
        nvmlDeviceGetGraphicsRunningProcesses=graphics,
    )


def test_nvml_devices_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_nvml", _fake_nvml)
    first, second = gpus.list_devices()
    assert (first.id, first.uuid, first.name) == ("0", "GPU-0", "NVIDIA H100")
    assert (first.memory_used_mb, first.memory_total_mb, second.utilization) == (1000, 80000, 10)
    # a pid from another namespace has no owner; unknown memory reads as zero, never crashes
    assert first.processes[0].owner == "?" and first.processes[0].memory_mb == 5000
    assert second.processes[0].memory_mb == 0


def test_a_failing_gpu_does_not_hide_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_nvml", lambda: _fake_nvml(broken_index=0))
    assert [d.id for d in gpus.list_devices()] == ["1"]


def test_gpus_cli_json_lists_fake_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mdtui.cli import app

    monkeypatch.chdir(tmp_path)  # no experiments.toml: defaults, no reservations
    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps([{"memory_used_mb": 24000}, {}]))
    result = CliRunner().invoke(app, ["gpus", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "fake"
    assert [d["id"] for d in data["devices"]] == ["0", "1"]
    assert "free" in data["devices"][0]["blocked"] and data["devices"][1]["blocked"] is None
    monkeypatch.setenv(gpus.FAKE_ENV, "[{")
    bad = CliRunner().invoke(app, ["gpus"])
    assert bad.exit_code == 2 and "not valid JSON" in bad.output
