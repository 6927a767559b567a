"""Index samplers: the order of one epoch as a pure function of a seeded generator.

Every sampler turns per-class training counts into the sample indices of one epoch, vectorised
(a loop over classes, never over samples). The run seeds a fresh ``torch.Generator`` per epoch, so
resuming a run mid-way regenerates exactly the same order.

* ``random``: a permutation of the training set (the reference's shuffled DataLoader).
* ``class_aware``: reference-spec.md §4.1 (classifier-balancing's ClassAwareSampler).
* ``balanced_iid``: the reference's unused ``BalancedSampler`` (i.i.d. uniform class per draw).
"""

from __future__ import annotations

import math

import torch

from engine.registry import Registry
from engine.schema.config import SamplerConfig
from engine.schema.validate import require_block_in_range


class Sampler:
    """Produces the training indices of one epoch."""

    name = "sampler"

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.labels = labels.cpu().long()
        self.num_classes = num_classes
        self.pools = [torch.nonzero(self.labels == c).flatten() for c in range(num_classes)]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


SAMPLERS: Registry[type[Sampler]] = Registry("sampler")  # names == engine.schema.catalog.SAMPLER_PARAMS


@SAMPLERS.register("random")
class RandomSampler(Sampler):
    name = "random"

    def __init__(self, labels: torch.Tensor, num_classes: int, cfg: SamplerConfig | None = None) -> None:
        super().__init__(labels, num_classes)

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.labels), generator=generator)


def _cycle(pool: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """The first ``length`` items of a random cycle over ``pool``: fresh permutations, back to back.

    This is the reference's RandomCycleIter: it reshuffles each time it wraps, and its first pass
    is shuffled too.
    """
    n = int(pool.shape[0])
    if length <= 0 or n == 0:
        return pool.new_zeros(0)
    passes = math.ceil(length / n)
    perms = torch.argsort(torch.rand(passes, n, generator=generator), dim=1)
    return pool[perms.flatten()[:length]]


def _epoch_length(sampler: Sampler, mode: str) -> int:
    if mode == "dataset":
        return len(sampler.labels)
    # max_c n_c x C: 50,000 for CIFAR-10-LT rho=100 (reference-spec.md §4.1).
    return max(int(p.shape[0]) for p in sampler.pools) * sum(1 for p in sampler.pools if len(p))


@SAMPLERS.register("class_aware")
class ClassAwareSampler(Sampler):
    """reference-spec.md §4.1: a random cycle over classes; per class drawn, ``num_samples_cls``
    consecutive items of that class's own random cycle.

    The reference keeps its cycle iterators alive across epochs; here each epoch starts fresh cycles
    from its own generator, so the order is a pure function of (seed, epoch) and resume is exact.
    An epoch spans many full cycles, so the sampling distribution is the same.
    """

    name = "class_aware"

    def __init__(self, labels: torch.Tensor, num_classes: int, cfg: SamplerConfig) -> None:
        super().__init__(labels, num_classes)
        self.per_class = int(cfg.num_samples_cls)
        self.length = _epoch_length(self, cfg.epoch_length)

    def __len__(self) -> int:
        return self.length

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        classes = torch.tensor([c for c, p in enumerate(self.pools) if len(p)], dtype=torch.long)
        draws = math.ceil(self.length / self.per_class)
        class_order = _cycle(classes, draws, generator)  # the class cycle, renewed each full pass
        out = torch.empty(draws, self.per_class, dtype=torch.long)
        for c in classes.tolist():
            where = class_order == c
            count = int(where.sum())
            if count:
                items = _cycle(self.pools[c], count * self.per_class, generator)
                out[where] = items.view(count, self.per_class)
        return out.flatten()[: self.length]


@SAMPLERS.register("balanced_iid")
class BalancedIidSampler(Sampler):
    """Each draw picks a class uniformly at random, then that class's next item (reference-spec.md §4.1)."""

    name = "balanced_iid"

    def __init__(self, labels: torch.Tensor, num_classes: int, cfg: SamplerConfig) -> None:
        super().__init__(labels, num_classes)
        self.length = _epoch_length(self, cfg.epoch_length)

    def __len__(self) -> int:
        return self.length

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        classes = torch.tensor([c for c, p in enumerate(self.pools) if len(p)], dtype=torch.long)
        picks = classes[torch.randint(len(classes), (self.length,), generator=generator)]
        out = torch.empty(self.length, dtype=torch.long)
        for c in classes.tolist():
            where = picks == c
            out[where] = _cycle(self.pools[c], int(where.sum()), generator)
        return out


def build_sampler(cfg: SamplerConfig, labels: torch.Tensor, num_classes: int) -> Sampler:
    require_block_in_range(cfg, "sampler")
    try:
        sampler_class = SAMPLERS.get(cfg.name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return sampler_class(labels, num_classes, cfg)
