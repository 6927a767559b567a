"""Samplers: reference-spec.md §4.1 semantics, vectorised, deterministic per generator."""

from __future__ import annotations

import torch

from engine.samplers import build_sampler
from engine.schema.config import SamplerConfig


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


LABELS = torch.tensor([0] * 12 + [1] * 5 + [2] * 2)


def test_random_is_a_permutation():
    s = build_sampler(SamplerConfig(name="random"), LABELS, 3)
    idx = s.epoch_indices(gen())
    assert sorted(idx.tolist()) == list(range(len(LABELS)))
    assert len(s) == len(LABELS)


def test_class_aware_structure():
    s = build_sampler(SamplerConfig(name="class_aware", num_samples_cls=4), LABELS, 3)
    assert len(s) == 12 * 3  # max count x C
    idx = s.epoch_indices(gen(1))
    assert idx.shape == (36,)
    cls = LABELS[idx]
    chunks = cls.view(-1, 4)
    # num_samples_cls consecutive items of one class per draw
    assert bool((chunks == chunks[:, :1]).all())
    draw_classes = chunks[:, 0].tolist()
    # the class cycle: every aligned run of C draws is a permutation of the classes
    for i in range(0, len(draw_classes) - 2, 3):
        assert sorted(draw_classes[i : i + 3]) == [0, 1, 2]
    # each class's items come from a random cycle: every aligned n_c items are a permutation of the pool
    for c, n in ((1, 5), (2, 2)):
        items = idx[cls == c].tolist()
        pool = sorted(torch.nonzero(c == LABELS).flatten().tolist())
        for i in range(0, len(items) - n + 1, n):
            assert sorted(items[i : i + n]) == pool


def test_class_aware_dataset_length_and_determinism():
    s = build_sampler(SamplerConfig(name="class_aware", epoch_length="dataset"), LABELS, 3)
    assert len(s) == len(LABELS)
    assert torch.equal(s.epoch_indices(gen(5)), s.epoch_indices(gen(5)))
    assert not torch.equal(s.epoch_indices(gen(5)), s.epoch_indices(gen(6)))


def test_balanced_iid_is_class_uniform():
    labels = torch.tensor([0] * 1000 + [1] * 10)
    s = build_sampler(SamplerConfig(name="balanced_iid"), labels, 2)
    assert len(s) == 2000
    idx = s.epoch_indices(gen(3))
    frac = (labels[idx] == 1).float().mean().item()
    assert 0.45 < frac < 0.55
    # class-1 draws cycle through its 10 items: every aligned 10 are a permutation
    ones = idx[labels[idx] == 1].tolist()
    assert sorted(ones[:10]) == list(range(1000, 1010))
