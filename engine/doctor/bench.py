"""``python -m engine bench --doctor``: treatment-step cost and sift/diagnosis throughput.

The treatment step (classification loss + last-conv channel loss with double back-propagation) is
timed against a plain step on the same model and batch; the target is a ratio of at most 1.3 for
resnet32 (issue 4).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from engine.bench import BenchShape
from engine.doctor.constraint import ChannelConstraint, ConstrainedLayer
from engine.doctor.masks import layer_energies
from engine.doctor.sift import TopPerClass, sift_keys


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_per_call(fn: Callable[[], None], device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


def bench_doctor(
    shape: BenchShape = BenchShape(),
    *,
    warmup: int = 5,
    device: str | None = None,
    precision: str = "fp32",
    noise_std: float = 1.0,
) -> dict[str, Any]:
    """Seconds per plain and treatment step, their ratio, and sift/diagnosis images per second."""
    model, batch_size, steps = shape.model, shape.batch_size, shape.steps
    input_size, num_classes = shape.image_size, shape.num_classes
    from engine.models import build_model, resolve_layer
    from engine.schema.config import ModelConfig

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    net = build_model(ModelConfig(model), 3, num_classes, image_size=input_size).to(dev)
    images = torch.randn(batch_size, 3, input_size, input_size, device=dev)
    labels = torch.randint(0, num_classes, (batch_size,), device=dev)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext()

    path, layer = resolve_layer(net, "last_conv")
    out_channels = layer.weight.shape[0]
    mask = (torch.rand(num_classes, out_channels, device=dev) > 0.5).float()
    constraint = ChannelConstraint([ConstrainedLayer(path, layer, mask)], weight=10.0, noise_std=noise_std)
    constraint.set_training(False)
    net.train()

    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None  # fp16 trains scaled

    def update(loss: torch.Tensor) -> None:
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(net(images), labels)
        update(loss)

    def treatment_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = net(images)
            loss = F.cross_entropy(logits, labels)
            terms = constraint.loss_terms(logits, labels)
            loss = loss + sum(terms.values())
        update(loss)

    plain = _time_per_call(plain_step, dev, steps, warmup)
    constraint.set_training(True)
    treat = _time_per_call(treatment_step, dev, steps, warmup)
    constraint.remove()

    net.eval()
    top = TopPerClass(num_classes, 100, device=dev)
    index = torch.arange(batch_size, device=dev)

    def sift_batch() -> None:
        with torch.inference_mode(), autocast():
            logits = net(images)
        top.update(*sift_keys(logits, labels, "high"), labels, index)

    def diagnose_batch() -> None:
        logits, energies = layer_energies(net, {path: layer}, images, labels)
        top.update(*sift_keys(logits, labels, "high"), labels, index, energies[path])

    sift_s = _time_per_call(sift_batch, dev, steps, warmup)
    diag_s = _time_per_call(diagnose_batch, dev, steps, warmup)
    return {
        "model": model,
        "layer": path,
        "batch_size": batch_size,
        "device": str(dev),
        "precision": precision,
        "plain_step_s": round(plain, 5),
        "treatment_step_s": round(treat, 5),
        "treatment_ratio": round(treat / plain, 3),
        "treatment_ratio_target": 1.3,
        "sift_images_per_s": round(batch_size / sift_s, 1),
        "diagnosis_images_per_s": round(batch_size / diag_s, 1),
    }
