"""Data-parallel runs over 2 gloo ranks started by torchrun, against one process on the same global batch.

Each torchrun run costs a few seconds of start-up, so the runs are module fixtures shared by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.schema.config import to_dict
from engine.schema.events import read_events
from engine.sinks import ListSink
from engine.train import Trainer, run
from tests.engine.engine_helpers import tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# 48 training samples in global batches of 11: 5 steps per epoch, shards of 6 and 5, the last batch 4
# samples (2 and 2); 4 epochs = 20 steps. Plain SGD with a small step: this tiny problem has BatchNorm
# channels of almost no variance, where float32 rounding of the batch statistics is noise, and with
# momentum (or lr 0.05) a 1e-6 perturbation of the weights grows to 1e-3 in 20 steps even in one
# process. Here it stays below 1e-5, so the comparisons below test the ranks, not that noise.
BASE = {
    "seed": 1,
    "epochs": 4,
    "batch_size": 11,
    "optim": {"lr": 0.002, "momentum": 0.0},
    "eval_batch_size": 7,  # 18 test samples: batches of 7, 7, 4 -> shards 4/3, 4/3, 2/2
    "device": "cpu",
    "precision": "fp32",
    "channels_last": False,
    "step_events_per_second": 1e6,  # every step
    "distributed": {"processes": 2, "sync_bn": True},
}


def config(**overrides):
    return tiny_config(**{**BASE, **overrides})


def write_run(run_dir: Path, cfg) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg)))
    return run_dir


def torchrun(run_dir: Path, processes: int = 2, *extra: str, pythonpath: str = "") -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [pythonpath, str(REPO)])),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return subprocess.Popen(
        [*cmd, "-m", "engine", str(run_dir), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def ranks_said(run_dir: Path) -> str:
    """What ranks k > 0 printed (their fds go to stderr.rank{k}.log, not to torchrun's stderr): a
    failed assertion shows the rank's own message, e.g. the cause of a SIGABRT."""
    return "".join(
        f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(run_dir.glob("stderr.rank*.log"))
    )


def rank1_hook(folder: Path, action: str, epoch: int, step: int) -> str:
    """A sitecustomize.py (run at interpreter start in every process of the run) that makes rank 1
    do ``action`` at the start of (epoch, step): a deterministic stop or failure, no timing race."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import os, signal\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import engine.loop as loop\n"
        "    real = loop._train_step\n"
        "    def hooked(ctx, batch, step):\n"
        f"        if (ctx.epoch, step) == ({epoch}, {step}):\n"
        f"            {action}\n"
        "        return real(ctx, batch, step)\n"
        "    loop._train_step = hooked\n"
    )
    return str(folder)


def ddp_census_hook(folder: Path) -> str:
    """A sitecustomize.py that makes every rank print how many DistributedDataParallel objects are
    alive when it leaves its process group (one left over outlives the group it holds). Automatic
    collection is off, so the count does not depend on when the last one happened to run."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('RANK'):\n"
        "    import gc\n"
        "    gc.disable()\n"
        "    import engine.distributed as d\n"
        "    from torch.nn.parallel import DistributedDataParallel as DDP\n"
        "    real = d.destroy\n"
        "    def destroy(**kw):\n"
        "        alive = sum(isinstance(o, DDP) for o in gc.get_objects())\n"
        "        print(f'DDP alive at destroy: {alive}', file=sys.stderr, flush=True)\n"
        "        return real(**kw)\n"
        "    d.destroy = destroy\n"
    )
    return str(folder)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def events(run_dir: Path, type_: str) -> list[dict]:
    path = run_dir / "events.jsonl"
    found = read_events(path) if path.exists() else []
    return [e for e in found if isinstance(e, dict) and e["type"] == type_]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


# How far two runs of the same arithmetic in another summation order may end apart, as a fraction of
# how far training moved each tensor. The ranks and the one process do the same float32 operations
# except for the order of their sums: two shard sums and an all-reduce instead of one batch sum, and
# SyncBN's batch statistics summed in float64 across ranks instead of float32 in one process. A sum of
# n float32 terms in another order differs by up to n * 2**-24 of the sum of their magnitudes
# (n = 11 or 47 samples x 64 positions ~ 700-3000 in layer1: 4e-5-2e-4), more where signs cancel
# and in BatchNorm channels of almost no variance; so each step's update carries a relative error
# of ~1e-4 (plain) to ~3e-4 (Model Doctor: the double backward chains three such sums), and 20 plain
# or 4 doctor steps accumulate ~2e-3 / ~1e-3. The bound is 1e-2 of the move: 5-10x that estimate,
# and it does not depend on the CPU's vector width, BLAS blocking or thread count, which only pick
# another order. A wrong shard weighting, a skipped collective or another mask changes the update by
# several percent or more; a single step that is wrong is caught by the per-step losses below.
UPDATE_RTOL = 1e-2
# Rounding of the stored weights themselves (a tensor that barely moved): 16 float32 ulps of its
# largest value.
STORED_ULPS = 16 * 2.0**-24


def close(
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    start: dict[str, torch.Tensor],
    where=None,
) -> None:
    """``a`` and ``b``, trained from the same ``start``, apart by at most UPDATE_RTOL of how far
    training moved each tensor from ``start`` (parameters and BatchNorm's running statistics alike)."""
    assert a.keys() == b.keys() == start.keys()  # rank-agnostic: no "module." prefix
    for key in a:
        x, y, s = a[key].double(), b[key].double(), start[key].double()
        limit = UPDATE_RTOL * (y - s).abs().max().item() + STORED_ULPS * y.abs().max().item()
        error = (x - y).abs().max().item()
        assert error <= limit, (key, error, limit, where)


def initial_weights(cfg, run_dir: Path) -> dict[str, torch.Tensor]:
    """The weights every run of ``cfg`` starts from (built from its seed, as ``run`` builds them)."""
    trainer = Trainer(cfg, run_dir, ListSink(), stop=threading.Event())
    trainer.setup(resume=False)
    return {key: value.detach().clone() for key, value in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, ListSink]:
    """The reference: one process, same config (processes > 1 means nothing without torchrun)."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    sink = ListSink()
    assert run(config(), run_dir, sink) == "completed", sink.events[-1]
    return run_dir, sink


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> dict[str, torch.Tensor]:
    return initial_weights(config(), tmp_path_factory.mktemp("start") / "run")


@pytest.fixture(scope="module")
def double(tmp_path_factory) -> Path:
    run_dir = write_run(tmp_path_factory.mktemp("double") / "run", config())
    code, err = finish(torchrun(run_dir))
    assert code == 0, err[-3000:] + ranks_said(run_dir)
    return run_dir


def test_two_ranks_train_as_one_process(single, double, start) -> None:
    _, sink = single
    one = [e["loss"] for e in sink.of_type("step")]
    two = [e["loss"] for e in events(double, "step")]
    assert len(one) == len(two) == 20
    # Each loss is a float32 mean (two shard means combined vs one) of a float32 forward pass on weights
    # that agree to well within UPDATE_RTOL of an update of ~1e-3: rounding moves it by ~1e-6 of
    # itself; 1e-4 relative leaves room for another CPU's summation order while a sample dropped or
    # counted twice (1/11 of a batch) moves it by percents.
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=0)
    for a, b in zip(sink.of_type("epoch"), events(double, "epoch"), strict=True):
        assert b["train"]["loss"] == pytest.approx(a["train"]["loss"], rel=1e-4, abs=0)
        assert a["train"]["acc1"] == b["train"]["acc1"]
        assert a["eval"]["count"] == b["eval"]["count"] == 18  # every test sample once, none padded
    close(weights(double), weights(single[0]), start)
    # only rank 0 wrote: rank 1 has its log and nothing else
    assert (double / "stderr.rank1.log").is_file()
    assert not (double / "stderr.rank0.log").exists()


def test_sharded_evaluation_equals_one_process_on_the_same_weights(double, tmp_path) -> None:
    """The 2-rank run's last evaluation, repeated in one process on the weights it saved."""
    last = events(double, "epoch")[-1]["eval"]
    trainer = Trainer(config(), tmp_path / "eval", ListSink(), stop=threading.Event())
    trainer.setup(resume=False)
    trainer.model.load_state_dict(weights(double))
    again = trainer.evaluate_split("test")
    again.pop("confusion")
    for key in ("acc1", "acc5", "per_class", "count", "few", "err1"):
        assert again[key] == last[key], key
    # Same weights, so only rounding: float32 means over shards of 4/3 vs batches of 7, and per-sample
    # logits that another CPU's convolution kernels may block differently for another batch size
    # (sums of up to 576 float32 terms per layer, ~33 layers: ~1e-5 relative at most). 1e-4 relative;
    # one of the 18 test samples counted twice or missing moves the mean loss by percents.
    assert again["loss"] == pytest.approx(last["loss"], rel=1e-4, abs=0)


def test_eval_batches_smaller_than_the_world_complete(tmp_path) -> None:
    """eval_batch_size 1 on 2 ranks: rank 1's shard of every eval batch is empty. Through DDP, rank
    0's first eval forward broadcast the buffers with no partner and both ranks hung."""
    cfg = config(epochs=1, eval_batch_size=1, distributed={"processes": 2, "sync_bn": False})
    run_dir = write_run(tmp_path / "run", cfg)
    code, err = finish(torchrun(run_dir, pythonpath=ddp_census_hook(tmp_path / "hook")), timeout=90)
    assert code == 0, err[-3000:] + ranks_said(run_dir)
    (epoch,) = events(run_dir, "epoch")
    assert epoch["eval"]["count"] == 18  # every test sample, all on rank 0
    # each rank's DDP wrapper was freed before its process group was destroyed
    assert "DDP alive at destroy: 0" in err and "DDP alive at destroy: 0" in ranks_said(run_dir)


def test_stop_on_one_rank_then_resume_with_one_or_two_processes(single, start, tmp_path) -> None:
    run_dir = write_run(tmp_path / "run", config())
    # rank 1 alone receives SIGTERM during step 2 of epoch 1: both ranks finish that step and stop
    hook = rank1_hook(tmp_path / "hook", "os.kill(os.getpid(), signal.SIGTERM)", 1, 2)
    code, err = finish(torchrun(run_dir, pythonpath=hook))
    assert code == 0, err[-3000:] + ranks_said(run_dir)
    assert events(run_dir, "run_finished")[-1]["status"] == "stopped"
    assert [(e["epoch"], e["step"]) for e in events(run_dir, "step")][-1] == (1, 2)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 3)
    assert not any(k.startswith("module.") for k in state["model"])
    one = shutil.copytree(run_dir, tmp_path / "one")
    (one / "config.json").write_text(json.dumps(to_dict(config(distributed={"processes": 1}))))
    code, err = finish(
        subprocess.Popen(
            [sys.executable, "-m", "engine", str(one), "--resume"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    )
    assert code == 0, err[-3000:]
    code, err = finish(torchrun(run_dir, 2, "--resume"))
    assert code == 0, err[-3000:] + ranks_said(run_dir)
    for resumed in (run_dir, one):
        assert events(resumed, "run_finished")[-1]["status"] == "completed"
        close(
            weights(resumed),
            weights(single[0]),
            start,
            (resumed.name, state["epoch"], state["step_in_epoch"]),
        )


def test_a_rank_that_raises_fails_the_run_with_its_traceback(tmp_path) -> None:
    hook = rank1_hook(tmp_path / "hook", "raise RuntimeError('rank 1 broke on purpose')", 0, 2)
    run_dir = write_run(tmp_path / "run", config())
    code, err = finish(torchrun(run_dir, pythonpath=hook))
    assert code != 0
    log = (run_dir / "stderr.rank1.log").read_text()
    assert "Traceback" in log and "rank 1 broke on purpose" in log
    assert events(run_dir, "run_finished")[-1]["status"] == "failed"
    assert not events(run_dir, "epoch")


def test_model_doctor_masks_and_channel_loss_match_one_process(tmp_path) -> None:
    doctor = {
        "preset": "fork",
        "layers": ["last_conv"],
        "noise_std": 0.0,
        "sift": {"per_class": 4, "batch_size": 16},
    }
    # Global batches of 47 and 1: shards 24/23, then 1 and an empty one, which must still make every
    # collective the other rank makes (synchronised BatchNorm inside the double backward). Few steps:
    # the channel loss (values 4-50) makes this tiny problem chaotic soon.
    cfg = config(epochs=2, batch_size=47, doctor=doctor)
    sink = ListSink()
    assert run(cfg, tmp_path / "one", sink) == "completed", sink.events[-1]
    run_dir = write_run(tmp_path / "two", cfg)
    code, err = finish(torchrun(run_dir))
    assert code == 0, err[-3000:] + ranks_said(run_dir)
    mask = "artifacts/doctor/mask_layer3.4.conv2.npy"
    assert np.array_equal(np.load(tmp_path / "one" / mask), np.load(run_dir / mask))
    steps = events(run_dir, "step")
    assert len(steps) == 4 and all("loss_channel" in e for e in steps)
    # Step 1 differs by float32 rounding only; steps 2-4 run on weights that already differ by
    # ~1e-3 of their update (UPDATE_RTOL's estimate), which moves these losses (4-50) by about as much
    # of themselves. One sample of 47 dropped or counted twice moves a step's mean loss by percents.
    for key in ("loss", "loss_channel"):
        np.testing.assert_allclose(
            [e[key] for e in steps], [e[key] for e in sink.of_type("step")], rtol=1e-3, atol=0
        )
    close(weights(run_dir), weights(tmp_path / "one"), initial_weights(cfg, tmp_path / "start"))


def test_ranks_stop_gracefully_when_torchrun_is_killed(tmp_path) -> None:
    """Ranks live in sessions of their own: a SIGKILL of torchrun reaches them only through the
    parent-death signal each rank arms (SIGTERM), which stops them at an agreed step with last.pt."""
    import signal

    import psutil

    from tests.conftest import wait_for

    run_dir = write_run(tmp_path / "run", config(epochs=200))
    proc = torchrun(run_dir)
    wait_for(lambda: events(run_dir, "step"), timeout=120)
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True) if "engine" in p.cmdline()]
    assert len(ranks) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    try:
        _, alive = psutil.wait_procs(ranks, timeout=60)
        assert not alive
    finally:
        for rank in ranks:  # orphans of a failed test: not left training 200 epochs
            if rank.is_running():
                rank.kill()
    finished = events(run_dir, "run_finished")
    assert finished and finished[-1]["status"] == "stopped"
    assert (run_dir / "checkpoints" / "last.pt").is_file()
