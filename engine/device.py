"""Device, precision and memory-format choices (DESIGN.md section 9)."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch


class DeviceError(Exception):
    """The requested device or precision cannot be used here (a user-facing message)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first visible CUDA device, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
        return bool(torch.cuda.is_bf16_supported())
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
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
            info["device_name"] = torch.cuda.get_device_name(idx)
        return info


def make_runtime(device: str, precision: str, channels_last: bool) -> Runtime:
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(dev, prec, channels_last)
