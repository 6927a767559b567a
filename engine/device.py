"""Device, precision and memory-format choices (docs/development.md#speed-rules)."""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

# cuBLAS picks reduction splits per call unless its workspace is pinned to a fixed configuration;
# with CUDA >= 10.2 deterministic matmuls need ":4096:8" or ":16:8" (NVIDIA's cuBLAS docs, "Results
# reproducibility"). It is read when cuBLAS creates its handle, i.e. at the first CUDA matmul.
CUBLAS_DETERMINISTIC = ":4096:8"
FAKE_GPUS_ENV = "MDTUI_FAKE_GPUS"  # mdtui's pretend GPUs: a run "given" one trains on the CPU


class DeviceError(Exception):
    """The requested device or precision cannot be used here (a user-facing message)."""


def assigned_gpus() -> str:
    """The GPUs a manager handed this process (``CUDA_VISIBLE_DEVICES``), or "" when none were.

    mdtui's fake GPUs (``MDTUI_FAKE_GPUS``, demos and tests) are assignments on paper only.
    """
    if os.environ.get(FAKE_GPUS_ENV, "").strip():
        return ""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first visible CUDA device, else the CPU, unless GPUs were assigned."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        gpus = assigned_gpus()
        if gpus:
            # Training on the CPU here would book a GPU for hours and use none (a driver/toolkit
            # mismatch, a CPU-only torch, a UUID this node does not have): say so instead.
            raise DeviceError(
                f"GPUs were assigned to this run (CUDA_VISIBLE_DEVICES={gpus}) but CUDA sees none "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); check the "
                'driver with nvidia-smi and that torch is a CUDA build, or set device = "cpu"'
            )
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f'device "{name}" is not valid; use auto, cpu, cuda or cuda:N') from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f'device "{name}" was asked for but no CUDA device is visible; use "cpu" or "auto"'
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f'device "{name}" does not exist: {torch.cuda.device_count()} CUDA device(s) are visible'
            )
    elif device.type != "cpu":
        raise DeviceError(f'device "{name}" is not supported; use auto, cpu, cuda or cuda:N')
    return device


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        # Without native bf16 (before Ampere) CUDA emulates it through fp32: slower than fp32 itself.
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    try:
        # oneDNN's bf16 kernels need AVX-512 BF16 / AMX (or equivalent): without them bf16 is emulated and slow.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` = bf16 where the device runs it natively, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        raise DeviceError(f"precision bf16 is not supported on {device}; use auto or fp32")
    return precision


@dataclass
class Runtime:
    """The resolved execution settings of a run."""

    device: torch.device
    precision: str  # bf16 | fp16 | fp32
    channels_last: bool
    deterministic: bool = False

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling; bf16 has fp32's exponent range and does not."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "deterministic": self.deterministic,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
            info["device_name"] = torch.cuda.get_device_name(idx)
        return info


def allow_tf32() -> None:
    """fp32 matmuls and convolutions on TF32 tensor cores (Ampere+; a no-op elsewhere).

    torch >= 2.9 has per-backend ``fp32_precision`` and deprecates the ``allow_tf32`` flags; older
    torch has only the global matmul precision (which leaves cuDNN's default, TF32 on, alone).
    """
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        matmul.fp32_precision = "tf32"
        conv.fp32_precision = "tf32"
    else:  # pragma: no cover - torch < 2.9
        torch.set_float32_matmul_precision("high")


def set_deterministic(on: bool) -> None:
    """Reproducible kernels (``deterministic = true``) or the fastest ones (cuDNN autotuning).

    Autotuning picks among convolution algorithms by timing them, and the winner (with its
    summation order) can differ between processes: a resumed run would not continue bit for bit.
    Ops without a deterministic kernel warn (once, naming the op) instead of failing (``warn_only``):
    the main one is adaptive average pooling's backward, which for the global pooling of the ResNets
    (one output per channel) adds a single term to each input and so is reproducible after all.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


def make_runtime(device: str, precision: str, channels_last: bool, *, deterministic: bool = False) -> Runtime:
    if deterministic:
        set_deterministic(True)  # before any CUDA call: cuBLAS reads its workspace setting once
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    if dev.type == "cuda":
        set_deterministic(deterministic)
        allow_tf32()
    return Runtime(dev, prec, channels_last, deterministic)
