"""Tiny fixed-weight networks and a fake run context for the Model Doctor and kernel tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.schema.validate import from_dict


@dataclass
class FakeBatch:
    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    masks: torch.Tensor | None = None


class TinyNet(nn.Module):
    """x [B, 1, 1, 2] -> 1x1 conv to 2 channels (A [B, 2, 1, 2]) -> flatten (k, w order) -> Linear(4, 2).

    dz_c / dA_{b,k,0,w} = V[c, 2k + w] for every sample, which makes energies computable by hand.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5], [-1.0, 4.0, -0.5, 2.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


@dataclass
class FakeContext:
    """What the plugins read from a RunContext, without the loop."""

    cfg: Any
    model: nn.Module
    data: Any
    run_dir: Path
    batches: dict[str, list[FakeBatch]]
    events: list[tuple[str, dict]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    loader_calls: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def artifacts_dir(self) -> Path:
        return self.run_dir / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.run_dir.parent / "cache"

    optimizer: Any = None

    def emit(self, type_: str, **fields: Any) -> None:
        self.events.append((type_, fields))

    def log(self, msg: str) -> None:
        self.logs.append(msg)

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()

    def make_loader(self, split: str, *, batch_size: int, train_transform: bool, shuffle: bool, **_: Any):
        self.loader_calls += 1
        return list(self.batches[split])


@dataclass
class FakeData:
    num_classes: int
    class_names: list[str]
    train_counts: list[int]
    train: Any
    test: Any


@dataclass
class FakeSplit:
    ids: list[str]


def make_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list[FakeBatch]:
    out = []
    for start in range(0, len(labels), batch_size):
        sl = slice(start, start + batch_size)
        out.append(FakeBatch(images[sl], labels[sl], torch.arange(len(labels))[sl]))
    return out


def fake_context(
    tmp_path: Path,
    model: nn.Module,
    config: dict,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 16,
    run: str = "run",
) -> FakeContext:
    cfg = from_dict(config)
    ids = [f"train/{i}" for i in range(len(labels))]
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    data = FakeData(
        num_classes, [f"c{i}" for i in range(num_classes)], counts, FakeSplit(ids), FakeSplit(ids)
    )
    batches = make_batches(images, labels, batch_size)
    return FakeContext(
        cfg=cfg, model=model, data=data, run_dir=tmp_path / run, batches={"train": batches, "test": batches}
    )


def one_thread():
    """Generator for an autouse fixture: tiny models run far faster on one thread on a busy 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
