"""The pieces of data parallelism that one process can check: sharding, persistent streamed loaders,
checkpoint loading to the CPU (no process group needed)."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from engine import distributed
from engine.data.base import Split
from engine.data.build import build_data
from engine.data.loader import Placement, make_loader
from engine.samplers import build_sampler
from engine.sinks import ListSink
from engine.train import Trainer, run
from tests.engine.engine_helpers import tiny_config


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 11, 15])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_tile_the_global_batch_with_rank_0_never_smaller(size: int, world: int) -> None:
    parts = [distributed.shard_bounds(10, 10 + size, rank, world) for rank in range(world)]
    assert parts[0][0] == 10 and parts[-1][1] == 10 + size
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))  # contiguous, no gaps
    sizes = [hi - lo for lo, hi in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes[0] == max(sizes)


@pytest.mark.parametrize("sampler", ["random", "class_aware", "balanced_iid"])
def test_rank_shards_of_an_epoch_are_the_single_process_batches_with_the_same_augmentation(sampler) -> None:
    extra = {} if sampler == "random" else {"epoch_length": "dataset"}  # 48 samples: 5 batches
    cfg = tiny_config(sampler={"name": sampler, **extra})
    data = build_data(cfg)
    order = build_sampler(cfg.sampler, data.train.labels, data.num_classes)
    common = dict(batch_size=11, train_transform=True, shuffle=True)

    def epoch(shard):
        placement = Placement("cpu", num_workers=0, shard=shard)
        loader = make_loader(
            data,
            data.train,
            generator=torch.Generator().manual_seed(5),
            placement=placement,
            sampler=order,
            **common,
        )
        return list(loader.batches(0))

    whole, first, second = epoch((0, 1)), epoch((0, 2)), epoch((1, 2))
    assert len(whole) == len(first) == len(second) == 5  # 48 samples: 11, 11, 11, 11, 4
    for full, a, b in zip(whole, first, second, strict=True):
        assert torch.equal(torch.cat([a.index, b.index]), full.index)
        assert torch.equal(torch.cat([a.images, b.images]), full.images)  # crops/flips drawn per sample
        assert a.total == b.total == full.total == len(full)


class PidDataset(torch.utils.data.Dataset):
    """Sample i: an image filled with i, labelled with the pid of the process that loaded it."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        return torch.full((1, 4, 4), i, dtype=torch.uint8), os.getpid()


@pytest.mark.slow
def test_streamed_splits_keep_their_workers_across_epochs() -> None:
    data = build_data(tiny_config())
    split = Split(
        labels=torch.zeros(12, dtype=torch.long), ids=[str(i) for i in range(12)], dataset=PidDataset()
    )
    data.augment = "none"
    pids, seen = set(), []
    for seed in (1, 2, 3):  # three epochs, three orders
        loader = make_loader(
            data,
            split,
            batch_size=5,
            train_transform=True,
            shuffle=True,
            placement=Placement("cpu", num_workers=1),
            generator=torch.Generator().manual_seed(seed),
        )
        batches = list(loader.batches(1))  # resumes at batch 1 as well
        pids |= {int(p) for b in batches for p in b.labels}
        order = torch.cat([b.index for b in batches])
        assert torch.equal(order, loader.order[5:])
        seen.append(order)
    assert len(pids) == 1 and os.getpid() not in pids  # one worker process served every epoch
    assert not torch.equal(seen[0], seen[1])


def test_resume_loads_the_checkpoint_to_the_cpu(tmp_path, monkeypatch) -> None:
    """Loading last.pt onto a GPU left the RNG states there, and torch.cuda.set_rng_state_all refuses them."""
    cfg = tiny_config(epochs=1, device="cpu")
    assert run(cfg, tmp_path, ListSink()) == "completed"
    import engine.train as train

    seen, real = [], train.load_checkpoint

    def spy(path, map_location="cpu"):
        seen.append(map_location)
        return real(path, map_location=map_location)

    monkeypatch.setattr(train, "load_checkpoint", spy)
    trainer = Trainer(tiny_config(epochs=2, device="cpu"), tmp_path, ListSink(), threading.Event())
    trainer.setup(resume=True)
    assert seen == ["cpu"]
    assert torch.get_rng_state().device.type == "cpu"


def test_sync_batchnorm_in_one_process_is_batchnorm() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    synced = distributed.convert_sync_batchnorm(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)), "cpu"
    )
    synced.load_state_dict(plain.state_dict())  # same names: checkpoints move between the two
    assert isinstance(synced[1], distributed.CpuSyncBatchNorm)
    x = torch.randn(5, 3, 6, 6)
    assert torch.equal(plain(x), synced(x))


def test_more_ranks_than_visible_gpus_is_a_clear_device_error(monkeypatch) -> None:
    """`gpus = 1` with `distributed.processes = 2` would put two NCCL ranks on one GPU: refused, saying what to set."""
    from engine.device import DeviceError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    distributed.use_own_gpu(distributed.World(0, 2, 0))  # rank 0 has its GPU
    with pytest.raises(DeviceError, match=r"2 processes but 1 GPU\(s\) visible.*gpus = 2"):
        distributed.use_own_gpu(distributed.World(1, 2, 1))
