"""Batched augmentation equals a per-sample reference; loaders are deterministic and restartable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.data.augment import Normalizer, crop_flip, draw_params
from engine.data.base import DataBundle, Split
from engine.data.loader import Placement, make_loader
from engine.samplers import build_sampler
from engine.schema.config import SamplerConfig


def per_sample_reference(images, params, pad):
    out = []
    for i in range(images.shape[0]):
        padded = F.pad(images[i], (pad, pad, pad, pad))
        dy, dx = int(params.dy[i]), int(params.dx[i])
        crop = padded[:, dy : dy + images.shape[2], dx : dx + images.shape[3]]
        if params.hflip[i]:
            crop = crop.flip(2)
        if params.vflip[i]:
            crop = crop.flip(1)
        out.append(crop)
    return torch.stack(out)


def test_crop_flip_matches_per_sample_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 10), dtype=torch.uint8, generator=g)
    for augment in ("crop_flip", "crop", "flip", "flip_vflip", "none"):
        params = draw_params(16, augment, 3, torch.Generator().manual_seed(1))
        assert torch.equal(crop_flip(images, params, 3, augment), per_sample_reference(images, params, 3))
    params = draw_params(16, "crop_flip", 3, torch.Generator().manual_seed(1))
    assert params.hflip.any() and not params.hflip.all()
    assert int(params.dy.max()) <= 6 and int(params.dy.min()) >= 0
    assert bool((params.dy != 3).any())


def test_normalizer_and_channels_last():
    norm = Normalizer((0.5, 0.25), (0.5, 0.25), torch.device("cpu"))
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    out = norm(x, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out[0, 0], torch.full((2, 2), -1.0))
    assert torch.allclose(out[0, 1], torch.full((2, 2), 3.0))


def bundle(n: int = 20) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    split = Split(
        labels=labels,
        ids=[str(i) for i in range(n)],
        images=torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g),
    )
    return DataBundle(
        "t", split, split, None, 3, 1, 6, ["a", "b", "c"], None, (0.5,), (0.5,), "crop_flip", 2, [7, 7, 6]
    )


def collect(loader, start=0):
    return [(b.images.clone(), b.labels.clone(), b.index.clone()) for b in loader.batches(start)]


def test_loader_is_a_pure_function_of_its_generator_and_restartable():
    data = bundle()
    make = lambda seed: make_loader(  # noqa: E731
        data,
        "train",
        batch_size=6,
        train_transform=True,
        shuffle=True,
        placement="cpu",
        generator=torch.Generator().manual_seed(seed),
    )
    a, b = collect(make(3)), collect(make(3))
    assert len(a) == 4 and len(make(3)) == 4
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    tail = collect(make(3), start=2)
    assert all(torch.equal(x, y[0]) for (x, _, _), y in zip(tail, a[2:], strict=True))
    assert sorted(torch.cat([i for _, _, i in a]).tolist()) == list(range(20))
    assert not torch.equal(collect(make(4))[0][2], a[0][2])
    # labels follow the indices
    assert all(torch.equal(y, data.train.labels[i]) for _, y, i in a)


def test_loader_with_sampler_and_eval_order():
    data = bundle()
    sampler = build_sampler(SamplerConfig(name="class_aware", num_samples_cls=2), data.train.labels, 3)
    loader = make_loader(
        data,
        data.train,
        batch_size=7,
        train_transform=True,
        shuffle=True,
        sampler=sampler,
        placement="cpu",
        generator=torch.Generator().manual_seed(0),
    )
    assert sum(len(b) for b in loader) == len(sampler) == 21
    ev = make_loader(data, "test", batch_size=8, train_transform=False, shuffle=False, placement="cpu")
    batches = list(ev)
    assert torch.equal(torch.cat([b.index for b in batches]), torch.arange(20))
    expected = (data.test.images[:8].float() / 255 - 0.5) / 0.5
    assert torch.allclose(batches[0].images, expected, atol=1e-5)


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_streamed_split_gives_the_same_batches_as_in_memory():
    data = bundle()
    streamed = Split(
        labels=data.train.labels,
        ids=data.train.ids,
        dataset=PairDataset(data.train.images, data.train.labels),
    )
    kwargs = dict(batch_size=6, train_transform=True, shuffle=True, placement=Placement("cpu", num_workers=0))
    mem = collect(
        make_loader(data, data.train, generator=torch.Generator().manual_seed(9), **kwargs), start=1
    )
    st = collect(make_loader(data, streamed, generator=torch.Generator().manual_seed(9), **kwargs), start=1)
    assert len(mem) == len(st) == 3
    for (xa, ya, ia), (xb, yb, ib) in zip(mem, st, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
