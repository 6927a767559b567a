"""engine/device.py: where a run trains, at which precision, and how reproducibly.

The CPU tests pin down the decisions (assigned-but-invisible GPUs fail, native bf16 only, the
deterministic switches); the ``gpu`` tests check on a real device what a CPU cannot show.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading

import pytest
import torch

from engine import device as dev
from engine.data.loader import Placement, make_loader
from engine.loop import TrainParts, train_one_epoch
from engine.schema.validate import ConfigError, from_dict
from engine.sinks import ListSink, NullSink
from engine.train import Trainer, epoch_generator, run
from tests.engine.engine_helpers import tiny_config
from tests.engine.gpu_helpers import DEVICES, needs_cuda, on


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where CUDA sees no device (this one, or a GPU node with a broken driver)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(dev.FAKE_GPUS_ENV, raising=False)


@pytest.fixture
def restore_global_flags():
    """Deterministic mode and TF32 are process-wide: put them back for the tests that follow."""
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
    )
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]
    torch.backends.cuda.matmul.fp32_precision = flags[4]
    torch.backends.cudnn.conv.fp32_precision = flags[5]


# ------------------------------------------------------------------------------------ placement


def test_auto_fails_loudly_when_gpus_were_assigned_but_cuda_sees_none(no_cuda, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f3c1a2b")
    with pytest.raises(dev.DeviceError) as info:
        dev.resolve_device("auto")
    message = str(info.value)
    assert "CUDA_VISIBLE_DEVICES=GPU-5f3c1a2b" in message and "CUDA sees none" in message
    assert 'device = "cpu"' in message  # what to do about it


@pytest.mark.parametrize("visible", [None, "", "  "])
def test_auto_is_the_cpu_when_no_gpu_was_assigned(no_cuda, monkeypatch, visible) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)  # mdtui's value for a CPU run
    assert dev.resolve_device("auto") == torch.device("cpu")


def test_fake_gpus_are_assignments_on_paper_and_train_on_the_cpu(no_cuda, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-0000")
    monkeypatch.setenv(dev.FAKE_GPUS_ENV, "2")  # `MDTUI_FAKE_GPUS=2 mdtui` on a laptop
    assert dev.resolve_device("auto") == torch.device("cpu")


def test_an_explicit_cpu_ignores_assigned_gpus(no_cuda, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert dev.resolve_device("cpu") == torch.device("cpu")


def test_the_engine_run_fails_with_the_message_and_no_traceback(no_cuda, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f3c1a2b")
    sink = ListSink()
    assert run(tiny_config(epochs=1), tmp_path, sink) == "failed"
    assert "CUDA sees none" in sink.events[-1]["error"]
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------ precision


def test_auto_precision_does_not_count_emulated_bf16(monkeypatch) -> None:
    calls = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return including_emulation  # a pre-Ampere GPU: bf16 only through emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda")
    assert dev.resolve_precision("auto", cuda) == "fp32"
    assert calls == [False]
    with pytest.raises(dev.DeviceError, match="bf16 is not supported"):
        dev.resolve_precision("bf16", cuda)


def test_tf32_goes_through_the_per_backend_precision_api(restore_global_flags) -> None:
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    dev.allow_tf32()
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"


# ------------------------------------------------------------------------------------ determinism


def test_deterministic_turns_autotuning_off_and_pins_cublas(restore_global_flags, monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    runtime = dev.make_runtime("cpu", "fp32", False, deterministic=True)
    assert runtime.deterministic and runtime.describe()["deterministic"] is True
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == dev.CUBLAS_DETERMINISTIC


def test_default_keeps_autotuning(restore_global_flags) -> None:
    dev.set_deterministic(False)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()
    assert from_dict({}).deterministic is False and from_dict({"deterministic": True}).deterministic


def test_compile_with_doctor_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict({"compile": True, "doctor": {}})
    message = str(info.value)
    assert message.startswith("compile:") and "double backward" in message and "compile = false" in message
    assert from_dict({"compile": True}).compile and from_dict({"doctor": {}}).doctor is not None


# ------------------------------------------------------------------------------------ on a GPU


@contextlib.contextmanager
def sync_is_an_error(device: str):
    """On CUDA, any call that makes the host wait for the device raises inside the block."""
    if device != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


UNION_KERNELS = {"layers": ["20..29"], "mode": "union", "sift": {"per_class": 4, "batch_size": 16}}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("overrides", [{}, {"kernels": UNION_KERNELS}], ids=["default", "kernels_union"])
def test_training_steps_make_no_host_sync(tmp_path, device, overrides) -> None:
    """The hot path (loader batches, forward, loss, backward, step, meters, kernel masks) never waits
    for the device: on CUDA any synchronising call raises under sync debug mode "error". The CPU run
    checks the same code path without the sync check (so the twin cannot rot unseen)."""
    cfg = tiny_config(epochs=1, data={"samples_per_class": 64}, **on(device), **overrides)
    trainer = Trainer(cfg, tmp_path, NullSink(), threading.Event())
    trainer.setup(resume=False)
    loader = make_loader(
        trainer.data,
        trainer.data.train,
        batch_size=cfg.batch_size,
        train_transform=True,
        shuffle=True,
        sampler=trainer.sampler,
        placement=Placement(trainer.runtime.device, trainer.runtime.channels_last, num_workers=0),
        generator=epoch_generator(cfg.seed, 0),
    )
    batches = iter(loader.batches(0))
    first = next(batches)  # once per epoch: the split's device copy and the epoch's order
    with sync_is_an_error(device):
        parts = TrainParts(
            trainer.forward,
            trainer.criterion,
            trainer.optimizer,
            trainer.runtime,
            plugins=trainer.plugins,
            scaler=trainer.scaler,
            sink=NullSink(),
            nonfinite=cfg.nonfinite,
        )
        outcome = train_one_epoch(parts, itertools.chain([first], batches), epoch=0, lr=0.05)
    assert [p.name for p in trainer.plugins] == (["kernels"] if overrides else [])
    assert outcome.next_step == len(loader) >= 10
    assert outcome.meters.count == len(trainer.data.train)


@pytest.mark.gpu
@needs_cuda
def test_auto_picks_cuda_and_native_precision_on_a_gpu(restore_global_flags) -> None:
    runtime = dev.make_runtime("auto", "auto", True)
    assert runtime.device.type == "cuda"
    major, _ = torch.cuda.get_device_capability()
    assert runtime.precision == ("bf16" if major >= 8 else "fp32")
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "tf32"
