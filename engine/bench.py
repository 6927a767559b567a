"""``python -m engine bench``: throughput and loop overhead on CIFAR-shaped synthetic data.

For each precision it measures, on the same model and tensors:

* a *bare* step: zero_grad, forward, loss, backward, optimizer step on one fixed batch;
* a *loop* epoch: ``train_one_epoch`` over device-resident uint8 data with the real batched
  augmentation, meters and (throttled, discarded) step events;
* evaluation under ``inference_mode``.

``overhead_ratio = loop epoch wall time / (steps x bare step time)``: what the engine costs beyond
the arithmetic of training (target <= 1.15, docs/development.md#speed-rules).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine.data.base import DataBundle, Split
from engine.data.loader import Placement, make_loader
from engine.device import make_runtime
from engine.loop import TrainParts, evaluate, train_one_epoch
from engine.schema.config import ModelConfig
from engine.sinks import NullSink

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def synthetic_bundle(n: int, num_classes: int, size: int, channels: int = 3) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    split = Split(labels=labels, ids=[f"bench/{i}" for i in range(n)], images=images)
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    names = [str(c) for c in range(num_classes)]
    return DataBundle(
        "bench",
        split,
        split,
        None,
        num_classes,
        channels,
        size,
        names,
        None,
        CIFAR_MEAN,
        CIFAR_STD,
        "crop_flip",
        4,
        counts,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class BenchShape:
    """The workload a bench times: a model on batches of synthetic CIFAR-shaped images."""

    model: str = "resnet32"
    batch_size: int = 128
    steps: int = 20  # timed steps per measurement
    num_classes: int = 10
    image_size: int = 32


def bench_precision(
    shape: BenchShape,
    precision: str,
    *,
    device: str,
    channels_last: bool,
    compile_model: bool = False,
    repeats: int = 3,
) -> dict[str, Any]:
    from engine.models import build_model

    model_name, batch_size, steps = shape.model, shape.batch_size, shape.steps
    num_classes, image_size = shape.num_classes, shape.image_size

    rt = make_runtime(device, precision, channels_last)
    torch.manual_seed(0)
    data = synthetic_bundle(batch_size * steps, num_classes, image_size)
    model = build_model(ModelConfig(name=model_name), 3, num_classes, image_size=image_size)
    model = model.to(
        rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format
    )
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()

    placement = Placement(rt.device, rt.channels_last, num_workers=0)

    def loader(seed: int):
        return make_loader(
            data,
            "train",
            batch_size=batch_size,
            train_transform=True,
            shuffle=True,
            placement=placement,
            generator=torch.Generator().manual_seed(seed),
        )

    first = next(iter(loader(0)))
    x, y = first.images, first.labels
    # fp16 is timed as it trains: with loss scaling (its unscale and inf check are part of the cost)
    bare_scaler, loop_scaler = rt.grad_scaler(), rt.grad_scaler()

    def bare_steps(n: int) -> float:
        model.train()
        _sync(rt.device)
        t0 = time.perf_counter()
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            with rt.autocast():
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            if bare_scaler is None:
                loss.backward()
                optimizer.step()
            else:
                bare_scaler.scale(loss).backward()
                bare_scaler.step(optimizer)
                bare_scaler.update()
        _sync(rt.device)
        return time.perf_counter() - t0

    def loop_epoch(seed: int) -> float:
        _sync(rt.device)
        t0 = time.perf_counter()
        parts = TrainParts(forward, criterion, optimizer, rt, scaler=loop_scaler, sink=NullSink())
        train_one_epoch(parts, loader(seed), epoch=0, lr=0.01)
        _sync(rt.device)
        return time.perf_counter() - t0

    bare_steps(3)  # warm-up: kernel selection, allocator, oneDNN primitive caches
    loop_epoch(1)
    # Best of interleaved repeats (as timeit does): other load on the machine only ever adds time,
    # and interleaving exposes bare and loop timings to the same conditions.
    bare, loop = float("inf"), float("inf")
    for r in range(repeats):
        bare = min(bare, bare_steps(steps))
        loop = min(loop, loop_epoch(2 + r))
    eval_loader = make_loader(
        data,
        "test",
        batch_size=max(batch_size, 256),
        train_transform=False,
        shuffle=False,
        placement=placement,
    )
    evaluate(forward, eval_loader, criterion, rt, num_classes)
    eval_s = float("inf")
    for _ in range(repeats):
        _sync(rt.device)
        t0 = time.perf_counter()
        evaluate(forward, eval_loader, criterion, rt, num_classes)
        _sync(rt.device)
        eval_s = min(eval_s, time.perf_counter() - t0)
    n = batch_size * steps
    return {
        "precision": rt.precision,
        "grad_scaler": bare_scaler is not None,
        "channels_last": rt.channels_last,
        "train_images_per_s": round(n / loop, 1),
        "bare_train_images_per_s": round(n / bare, 1),
        "eval_images_per_s": round(n / eval_s, 1),
        "step_ms": round(1000 * loop / steps, 2),
        "overhead_ratio": round(loop / bare, 4),
    }


def bench_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many interleaved timings")
    parser.add_argument("--precision", default="auto,fp32", help="comma-separated: auto, bf16, fp16, fp32")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--doctor", action="store_true", help="also time a Model Doctor treatment step")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()] or ["auto"]
    shape = BenchShape(args.model, args.batch_size, args.steps, args.num_classes, args.image_size)
    for precision in precisions:
        try:
            results[precision] = bench_precision(
                shape,
                precision,
                device=args.device,
                channels_last=not args.no_channels_last,
                compile_model=args.compile,
                repeats=args.repeats,
            )
        except Exception as exc:  # report and go on with the other precisions
            results[precision] = {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {
        "model": args.model,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "steps": args.steps,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
    }
    auto, fp32 = results.get("auto", {}), results.get("fp32", {})
    if "train_images_per_s" in auto and "train_images_per_s" in fp32:
        out["auto_vs_fp32_train"] = round(auto["train_images_per_s"] / fp32["train_images_per_s"], 3)
    if args.doctor:
        try:
            from engine.doctor.bench import bench_doctor
        except ImportError as exc:
            out["doctor"] = {"error": f"engine.doctor.bench is not available ({exc})"}
        else:
            try:
                runtime = make_runtime(args.device, precisions[0], not args.no_channels_last)
                out["doctor"] = bench_doctor(
                    shape,
                    device=str(runtime.device),
                    precision=runtime.precision,  # the first --precision, "auto" resolved
                )
            except Exception as exc:  # reported like a failing precision: the figures above still stand
                out["doctor"] = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0 if any("error" not in r for r in results.values()) else 1  # nothing measured: a failure
