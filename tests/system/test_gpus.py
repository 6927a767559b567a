"""GPU facts (mdtui/system/gpus.py): the fake backend, NVML (MIG too), the CPU fallback, and placement:
inherited allocations filter the devices, children get UUIDs, assigned-but-invisible GPUs fail a run."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

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


# --------------------------------------------------------------------------------------- placement


def test_fake_gpus_have_uuids_and_children_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps([{}, {"uuid": "GPU-7e1d"}, {}]))
    assert [d.uuid for d in gpus.list_devices()] == ["GPU-fake-0000", "GPU-7e1d", "GPU-fake-0002"]
    assert gpus.cuda_visible_devices(["2", "1"]) == "GPU-fake-0002,GPU-7e1d"  # the run's order
    assert gpus.cuda_visible_devices(["cpu"]) == "" and gpus.cuda_visible_devices([]) == ""
    assert gpus.cuda_visible_devices(["9"]) == "9"  # not listed now: passed on as an NVML index


def test_children_get_indices_when_the_fake_description_is_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpus.FAKE_ENV, "[{")
    assert gpus.cuda_visible_devices(["1"]) == "1"


@pytest.mark.parametrize(
    ("inherited", "ids"),
    [
        ("1,3", ["1", "3"]),
        ("3,1", ["1", "3"]),  # ids stay NVML's indices, listed in NVML's order
        ("GPU-fake-0002", ["2"]),
        ("GPU-fake-0003,0", ["0", "3"]),
        ("GPU-b", ["1"]),  # a unique UUID prefix, as CUDA takes it
        ("GPU-", []),  # ambiguous: names no single GPU
        ("1,7,2", ["1"]),  # CUDA stops at the first entry that names no device
        ("0,,2", ["0"]),
        ("", []),  # a CPU-only allocation
        ("MIG-fake-0004-1", ["4:1"]),
        ("4", ["4:0", "4:1"]),  # a MIG GPU by index or UUID brings all its instances
        ("GPU-fake-0004,MIG-fake-0004-0", ["4:0", "4:1"]),
    ],
)
def test_an_inherited_allocation_filters_the_devices(
    monkeypatch: pytest.MonkeyPatch, inherited: str, ids: list[str]
) -> None:
    spec = [{}, {"uuid": "GPU-b0c1"}, {}, {}, {"name": "H200", "mig": [{}, {"memory_total_mb": 35000}]}]
    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps(spec))
    monkeypatch.setenv(gpus.FAKE_VISIBLE_ENV, inherited)
    assert [d.id for d in gpus.list_devices()] == ids


def test_fake_mig_instances_replace_their_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = [{"name": "H200", "uuid": "GPU-h200", "mig": [{}, {"memory_total_mb": 35000, "uuid": "MIG-x"}]}]
    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps(spec))
    first, second = gpus.list_devices()
    assert (first.id, first.uuid, first.name, first.parent_uuid) == (
        "0:0",
        "MIG-fake-0000-0",
        "H200 MIG",
        "GPU-h200",
    )
    assert (second.id, second.uuid, second.memory_total_mb) == ("0:1", "MIG-x", 35000)
    assert second.gpu_index == "0" and second.to_dict()["parent_uuid"] == "GPU-h200"
    assert gpus.cuda_visible_devices(["0:1"]) == "MIG-x"
    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps([{"mig": 2}]))
    with pytest.raises(gpus.GpuConfigError, match="mig must be a list"):
        gpus.list_devices()


def test_the_fake_backend_ignores_the_real_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpus.FAKE_ENV, "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # e.g. the shell of a CPU run's engine
    assert [d.id for d in gpus.list_devices()] == ["0", "1"]


def _mig_nvml() -> types.SimpleNamespace:
    """GPU 0 whole; GPU 1 in MIG mode with instances in slots 0 and 2 (slot 1 empty)."""
    nvml = _fake_nvml()
    mib = 1 << 20

    class NotFound(Exception):
        pass

    def handle(index: int):
        return ("gpu", index)

    def mig_handle(h, n: int):
        if n not in (0, 2):
            raise NotFound("NVML_ERROR_NOT_FOUND")
        return ("mig", h[1], n)

    def mig_mode(h):
        if h[1] == 0:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return (1, 1)

    def uuid(h) -> bytes:
        return (f"GPU-{h[1]}" if h[0] == "gpu" else f"MIG-{h[1]}-{h[2]}").encode()

    nvml.NVML_DEVICE_MIG_ENABLE = 1
    nvml.nvmlDeviceGetHandleByIndex = handle
    nvml.nvmlDeviceGetMigMode = mig_mode
    nvml.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7
    nvml.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    nvml.nvmlDeviceGetUUID = uuid
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        used=0, total=(143000 if h[0] == "gpu" else 18000) * mib
    )
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=0)
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H200" if h[0] == "gpu" else b"NVIDIA H200 MIG 1g.18gb"
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    return nvml


def test_nvml_lists_mig_instances_as_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _mig_nvml()
    monkeypatch.setattr(gpus, "_nvml", lambda: nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    devices = gpus.list_devices()
    assert [(d.id, d.uuid, d.memory_total_mb) for d in devices] == [
        ("0", "GPU-0", 143000),
        ("1:0", "MIG-1-0", 18000),  # not one 143 GB device: the instances CUDA can run on
        ("1:2", "MIG-1-2", 18000),
    ]
    assert devices[1].parent_uuid == "GPU-1" and devices[1].name.endswith("1g.18gb")
    assert gpus.cuda_visible_devices(["1:2", "0"]) == "MIG-1-2,GPU-0"


@pytest.mark.parametrize(
    ("inherited", "ids", "backend"),
    [
        ("1", ["1:0", "1:2"], "nvml"),
        ("MIG-1-2", ["1:2"], "nvml"),
        ("GPU-0", ["0"], "nvml"),
        ("", ["cpu"], "cpu"),
    ],
)
def test_nvml_devices_follow_the_inherited_variable(
    monkeypatch: pytest.MonkeyPatch, inherited: str, ids: list[str], backend: str
) -> None:
    nvml = _mig_nvml()
    monkeypatch.setattr(gpus, "_nvml", lambda: nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)  # a Slurm job's or a container's allocation
    assert [d.id for d in gpus.list_devices()] == ids
    assert gpus.backend_name() == backend


def test_the_engine_gets_uuids_of_an_inherited_allocation(store, tiny_plan, fake_engine, monkeypatch) -> None:
    """End to end: the supervisor of a run on devices 3 and 1 of an allocation of 1 and 3 hands its
    engine those GPUs by UUID, never the inherited variable or bare indices."""
    from mdtui.execution import supervise
    from mdtui.runs.prepare import create_run_for

    monkeypatch.setenv(gpus.FAKE_ENV, "4")
    monkeypatch.setenv(gpus.FAKE_VISIBLE_ENV, "1,3")
    rec = create_run_for(tiny_plan, store, tiny_plan.experiments["tiny"], seed=0, devices=["3", "1"])
    pid = supervise.launch(store, rec.run_id, devices=["3", "1"], env={"CUDA_VISIBLE_DEVICES": "1,3"})
    assert supervise.wait_supervisor(pid, timeout=30)
    started = json.loads((Path(rec.run_dir) / "events.jsonl").read_text().splitlines()[0])
    assert started["world"]["CUDA_VISIBLE_DEVICES"] == "GPU-fake-0003,GPU-fake-0001"
    assert started["world"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_run_accepts_mig_ids_and_names_missing_ones(monkeypatch: pytest.MonkeyPatch, tiny_toml: Path) -> None:
    from typer.testing import CliRunner

    from mdtui.cli import app
    from mdtui.commands.run import parse_devices

    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps([{}, {"mig": [{}, {}]}]))
    assert parse_devices("1:1,0") == ["1:1", "0"]
    result = CliRunner().invoke(app, ["-f", str(tiny_toml), "run", "tiny", "--device", "1:5"])
    assert result.exit_code == 2 and "no GPU 1:5" in result.output and "0, 1:0, 1:1" in result.output


def test_excluding_a_mig_gpu_excludes_its_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    from mdtui.execution import ledger

    monkeypatch.setenv(gpus.FAKE_ENV, json.dumps([{}, {"uuid": "GPU-m", "mig": [{}, {}]}]))
    whole, first, second = gpus.list_devices()
    for spec in ("1", "GPU-m"):
        assert (
            ledger.matches(first, spec) and ledger.matches(second, spec) and not ledger.matches(whole, spec)
        )
    assert ledger.matches(second, "1:1") and not ledger.matches(first, "1:1")
    assert ledger.matches(first, "MIG-fake-0001-0") and not ledger.matches(whole, "0:0")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA sees no GPU")
def test_a_run_given_a_gpu_cuda_cannot_see_fails_with_the_reason(store, tiny_plan) -> None:
    """The real engine, device = "auto", handed GPU 0 on a box whose CUDA sees none: the run fails
    and says why, instead of booking the GPU and training on the CPU."""
    from mdtui.execution import supervise
    from mdtui.runs.prepare import create_run_for

    rec = create_run_for(tiny_plan, store, tiny_plan.experiments["tiny"], seed=0, devices=["0"])
    pid = supervise.launch(store, rec.run_id, devices=["0"])
    assert supervise.wait_supervisor(pid, timeout=120)
    done = store.get(rec.run_id)
    assert done.status == "failed"
    assert "GPUs were assigned to this run (CUDA_VISIBLE_DEVICES=0) but CUDA sees none" in done.error
