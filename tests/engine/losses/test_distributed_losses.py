"""Losses whose value depends on the whole batch, computed by 2 gloo ranks on the shards of one batch,
against one process on the whole batch: same value, same gradient, same running state.

The ranks are spawned directly (no torchrun): one step of each loss, no training, so the comparison
is exact up to float rounding.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow

LOSSES = {
    "ldam_drw": {"name": "ldam", "drw_epoch": 0},  # weighted mean: normalised by the summed weights
    "efl_repo": {"name": "efl", "mode": "repo"},
    "efl_paper": {"name": "efl", "mode": "paper"},  # running per-class gradient sums
    "efl_v1": {"name": "efl", "mode": "v1"},
    "cb_focal": {"name": "cb", "base": "focal"},
    "ce": {"name": "ce"},
}
COUNTS = [40, 12, 5]
BATCH = 15  # shards of 8 and 7


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, 3, generator=g) * 3, torch.randint(0, 3, (BATCH,), generator=g)


def one_step(spec: dict, logits: torch.Tensor, labels: torch.Tensor, scale: float = 1.0):
    """(value, d(value * scale)/d logits, loss buffers) after two training steps on the same batch
    (the second sees the running state the first left)."""
    from engine.losses import build_loss
    from engine.schema.config import LossConfig

    loss = build_loss(LossConfig(**spec), torch.tensor(COUNTS, dtype=torch.float), 3, 10)
    if hasattr(loss, "set_epoch"):
        loss.set_epoch(1)
    loss.train()
    loss(logits, labels)
    x = logits.clone().requires_grad_(True)
    value = loss(x, labels)
    (value * scale).backward()
    return float(value), x.grad, {k: v.clone() for k, v in loss.state_dict().items()}


def rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    from engine import distributed

    distributed.init("cpu")
    logits, labels = batch()
    lo, hi = distributed.shard_bounds(0, BATCH, rank, 2)
    results = {
        name: one_step(spec, logits[lo:hi], labels[lo:hi], distributed.loss_scale(hi - lo, BATCH))
        for name, spec in LOSSES.items()
    }
    torch.save({"rank": rank, "lo": lo, "hi": hi, "results": results}, os.path.join(out, f"rank{rank}.pt"))
    distributed.destroy()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_batch_statistic_losses_on_two_ranks_equal_one_process(tmp_path) -> None:
    mp.spawn(rank_main, args=(free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    logits, labels = batch()
    for name, spec in LOSSES.items():
        value, grad, state = one_step(spec, logits, labels)
        # the loop's meters: sum over ranks of value * n_rank / N is the global loss
        shared = sum(r["results"][name][0] * (r["hi"] - r["lo"]) for r in ranks) / BATCH
        # Both are float32 means of 15 positive per-sample losses, summed in another order (two shards
        # of 8 and 7, each CPU's vector width picking its own): they differ by at most 15 * 2**-24
        # ~ 9e-7 of the value, plus a few roundings of the weighting: 4e-6.
        assert shared == pytest.approx(value, rel=4e-6), name
        for r in ranks:
            # DDP averages over the 2 ranks: each rank's scaled gradient / 2 is one process's slice
            torch.testing.assert_close(r["results"][name][1] / 2, grad[r["lo"] : r["hi"]], msg=name)
            for key, buffer in state.items():
                torch.testing.assert_close(r["results"][name][2][key], buffer, msg=f"{name} {key}")
