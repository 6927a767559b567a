"""``run(cfg, run_dir, sink)``: one supervised training run, from config to ``run_finished``.

Order of set-up: data -> model (+ ``init_checkpoint``) -> optimiser, loss, sampler -> plugins'
``setup`` -> resume state from ``last.pt`` -> epochs. Each epoch trains, evaluates on the test split
(and the held-out val split when ``data.val_fraction > 0``), emits an ``epoch`` event and writes
``last.pt`` (and ``best.pt`` on a new best). Data order and augmentation come from a generator
seeded by (seed, epoch), so a resumed run replays exactly what the uninterrupted one did.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import random
import sys
import threading
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine import distributed
from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from engine.data.base import DataBundle, DataError
from engine.data.build import build_data
from engine.data.loader import Placement, make_loader
from engine.device import DeviceError, Runtime, make_runtime
from engine.loop import EpochOutcome, NonFiniteLoss, TrainMeters, TrainParts, evaluate, train_one_epoch
from engine.mixing import mix_batches
from engine.optim import build_optimizer, set_lr
from engine.plugins import RunContext, TrainPlugin
from engine.samplers import build_sampler
from engine.schedules import lr_at
from engine.schema.config import EngineConfig, is_leaky, to_dict
from engine.schema.validate import KERNELS_ONE_PROCESS
from engine.selection import SHOT_KEYS, Selection
from engine.sinks import EventSink


class RunError(Exception):
    """A failure the user can act on: reported as ``run_finished{failed}`` without a traceback."""


# --------------------------------------------------------------------------- set-up helpers


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's order and augmentation: a pure function of (seed, epoch)."""
    digest = hashlib.blake2b(f"mdtui:{seed}:{epoch}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_plugins(cfg: EngineConfig) -> list[TrainPlugin]:
    """Model Doctor and the kernel pipeline, imported only when their block is set."""
    plugins: list[TrainPlugin] = []
    for block, module, factory in (
        ("doctor", "engine.doctor", "build_doctor"),
        ("kernels", "engine.kernels", "build_kernels"),
        ("decouple", "engine.decoupled", "build_decoupled"),
        ("tau_norm", "engine.decoupled", "build_tau_norm"),
    ):
        if getattr(cfg, block) is None:
            continue
        try:
            build = getattr(__import__(module, fromlist=[factory]), factory)
        except (ImportError, AttributeError) as exc:
            raise RunError(f"{block}: this engine has no {module}.{factory} ({exc})") from None
        plugin = build(cfg)
        if plugin is not None:
            plugins.append(plugin)
    return plugins


def build_network(cfg: EngineConfig, data: DataBundle) -> nn.Module:
    from engine.losses import needs_normed_head
    from engine.models import build_model

    return build_model(
        cfg.model,
        cfg.model.in_channels or data.in_channels,
        cfg.model.num_classes or data.num_classes,
        normed_head=needs_normed_head(cfg.loss),  # e.g. LDAM, defined on cosine logits
        image_size=data.image_size,
    )


def build_criterion(cfg: EngineConfig, data: DataBundle) -> nn.Module:
    from engine.losses import build_loss

    return build_loss(cfg.loss, data.train_counts, data.num_classes, cfg.epochs)


# --------------------------------------------------------------------------- the run


class Trainer:
    """Holds one run's objects; ``run`` below drives it and turns failures into events."""

    def __init__(self, cfg: EngineConfig, run_dir: Path, sink: EventSink, stop: threading.Event) -> None:
        self.cfg, self.run_dir, self.sink, self.stop = cfg, run_dir, sink, stop
        self.ckpt_dir = run_dir / "checkpoints"
        self.artifacts_dir = run_dir / "artifacts"
        self.started = time.monotonic()
        self.elapsed_before = 0.0  # seconds spent in earlier sessions of a resumed run
        self.start_epoch, self.start_step = 0, 0
        self.epochs_done = 0
        self.last_test: dict[str, Any] = {}
        self.resumed_meters: dict[str, Any] | None = None
        self.selection = Selection("val" if cfg.data.val_fraction > 0 else "test", cfg.best_compare)
        self.world = distributed.world()  # joined in setup, once the device is known
        self.grad_sync = None

    # ----------------------------------------------------------------- set-up
    def setup(self, resume: bool) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        if distributed.detect().enabled and cfg.device != "cpu" and torch.cuda.is_available():
            # before anything touches CUDA: each rank's context on its own GPU, none on GPU 0
            distributed.use_own_gpu(distributed.detect())
        self.runtime: Runtime = make_runtime(
            cfg.device, cfg.precision, cfg.channels_last, deterministic=cfg.deterministic
        )
        self.world = distributed.init(self.runtime.device.type)
        if self.world.enabled and self.runtime.device.type == "cuda":
            self.runtime.device = torch.device("cuda", self.world.local_rank)
        wanted = cfg.distributed.processes
        # processes are per node: a 2-node x 1 run is right with 2 ranks in all
        if wanted > 0 and wanted != self.world.local_size:  # `python -m engine RUN_DIR` by hand, say
            self.sink.log(
                f"distributed.processes = {wanted} but {self.world.local_size} process(es) run this on "
                "this node "
                "(start it with python -m torch.distributed.run --nproc-per-node N -m engine RUN_DIR)",
                "warning",
            )
        if self.world.enabled and cfg.kernels is not None:
            raise RunError(f"{KERNELS_ONE_PROCESS}: start it on one device (or distributed.processes = 1)")
        self.data = build_data(cfg)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self.data.label_map and self.world.is_main:
            (self.artifacts_dir / "label_map.json").write_text(json.dumps(self.data.label_map, indent=1))
        model = build_network(cfg, self.data)
        if cfg.init_checkpoint:
            load_model_weights(model, cfg.init_checkpoint)
        if self.world.enabled and cfg.distributed.sync_bn:
            model = distributed.convert_sync_batchnorm(model, self.runtime.device.type)
        memory_format = torch.channels_last if self.runtime.channels_last else torch.preserve_format
        self.model = model.to(self.runtime.device, memory_format=memory_format)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.criterion = build_criterion(cfg, self.data).to(self.runtime.device)
        self.scaler = self.runtime.grad_scaler()
        self.sampler = build_sampler(cfg.sampler, self.data.train.labels, self.data.num_classes)
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        self.plugins = build_plugins(cfg)
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.run_dir / "cache"
        # The run's placement; plugins' loaders (diagnosis) read the whole split on every rank
        self.placement = Placement(
            self.runtime.device,
            self.runtime.channels_last,
            cfg.data.num_workers,
            (self.world.rank, self.world.size),
        )
        loader_factory = partial(
            make_loader, self.data, placement=dataclasses.replace(self.placement, shard=(0, 1))
        )
        ctx = RunContext(
            cfg=cfg,
            run_dir=self.run_dir,
            artifacts_dir=self.artifacts_dir,
            cache_dir=cache_dir,
            device=self.runtime.device,
            model=self.model,
            data=self.data,
            optimizer=self.optimizer,
            autocast=self.runtime.autocast,
            emit=self.sink.emit,
            log=self.sink.log,
            make_loader=loader_factory,
        )
        for plugin in self.plugins:
            plugin.setup(ctx)
        if resume:
            self.load_last()
        self.grad_sync = None
        wrapped = self.wrap_parallel(self.model)
        # Evaluation needs no gradient sync, and DDP's forward may broadcast buffers: a rank whose
        # shard of an eval batch is empty (eval_batch_size below the world) skips that forward, and
        # the ranks' collectives would pair up wrongly and hang. It goes through the bare model
        # (evaluate_split shares rank 0's buffers itself).
        self.forward, self.eval_forward = wrapped, self.model
        if cfg.compile:
            self.forward = torch.compile(wrapped)
            self.eval_forward = self.forward if wrapped is self.model else torch.compile(self.model)

    def wrap_parallel(self, model: nn.Module) -> nn.Module:
        """DDP over the ranks; with plugins (Model Doctor's channel loss is a double backward, which DDP
        does not support) the model stays unwrapped and gradients are averaged after backward."""
        if not self.world.enabled:
            return model
        if self.plugins:
            distributed.broadcast_module(model)  # rank 0's weights everywhere (DDP does this itself)
            params = [p for p in model.parameters() if p.requires_grad]
            self.grad_sync = partial(distributed.average_gradients, params)
            return model
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.runtime.device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[self.runtime.device.index] if cuda else None)

    def load_last(self) -> None:
        path = self.ckpt_dir / "last.pt"
        # To the CPU: load_state_dict places each tensor, and the RNG states must stay CPU tensors
        # (torch.cuda.set_rng_state_all refuses CUDA ones)
        state = load_checkpoint(path, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if state.get("criterion"):
            self.criterion.load_state_dict(state["criterion"])
        for plugin in self.plugins:
            plugin.load_state_dict(state.get("plugins", {}).get(plugin.name, {}))
        self.selection.load_state_dict(state["selection"])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step_in_epoch"])
        self.epochs_done = self.start_epoch
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.last_test = dict(state.get("last_test", {}))
        self.resumed_meters = state.get("meters")
        set_rng_state(state["rng"])
        self.sink.log(f"resumed from {path} at epoch {self.start_epoch}, step {self.start_step}")

    # ----------------------------------------------------------------- checkpoints
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def checkpoint_payload(self, epoch: int, step: int, meters: TrainMeters | None) -> dict[str, Any]:
        return {
            "format": "mdtui-engine-1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "criterion": self.criterion.state_dict(),
            "plugins": {p.name: p.state_dict() for p in self.plugins},
            "epoch": epoch,  # the epoch to run next (with step_in_epoch > 0: the one in progress)
            "step_in_epoch": step,
            "schedule_epoch": epoch,  # lr_at(epoch) is pure, so the epoch is the schedule's whole state
            "sampler": {"name": self.cfg.sampler.name, "seed": self.cfg.seed, "length": len(self.sampler)},
            "meters": meters.state_dict() if meters is not None else None,
            "selection": self.selection.state_dict(),
            "last_test": self.last_test,
            "elapsed": self.elapsed(),
            "rng": rng_state(),
            "config": json.dumps(to_dict(self.cfg)),
        }

    def save(self, name: str, payload: dict[str, Any], epoch: int, is_best: bool) -> None:
        if not self.world.is_main:  # the ranks hold the same weights: rank 0 writes for all
            return
        path = self.ckpt_dir / name
        save_checkpoint(path, payload)
        self.sink.emit("checkpoint", epoch=epoch, path=str(path), is_best=is_best)

    # ----------------------------------------------------------------- epochs
    def run_started(self) -> None:
        self.sink.emit(
            "run_started",
            config=to_dict(self.cfg),
            total_epochs=self.cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
            device=str(self.runtime.device),
            world={
                **self.runtime.describe(),
                "compile": self.cfg.compile,
                "processes": self.world.size,  # data-parallel ranks (torchrun); 1 without
                "train_size": len(self.data.train),
                "test_size": len(self.data.test),
                "val_size": len(self.data.val) if self.data.val is not None else 0,
                "num_classes": self.data.num_classes,
                "train_counts": self.data.train_counts,
                "plugins": [p.name for p in self.plugins],
                "selected_on": self.selection.split,
                "resumed_from": {"epoch": self.start_epoch, "step": self.start_step}
                if self.start_epoch or self.start_step
                else None,
            },
        )

    def train_epochs(self) -> str:
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.monotonic()
            lr = lr_at(epoch, cfg)
            set_lr(self.optimizer, lr)
            if hasattr(self.criterion, "set_epoch"):
                self.criterion.set_epoch(epoch)
            start = self.start_step if epoch == self.start_epoch else 0
            meters = TrainMeters(self.runtime.device)
            if start and self.resumed_meters:
                meters.load_state_dict(self.resumed_meters)
            outcome = self.train_phase(epoch, lr, start, meters)
            if outcome.stopped:
                self.save(
                    "last.pt", self.checkpoint_payload(epoch, outcome.next_step, outcome.meters), epoch, False
                )
                return "stopped"
            for plugin in self.plugins:
                plugin.set_training(False)
            test = self.evaluate_split("test")
            val = self.evaluate_split("val") if self.data.val is not None else None
            confusion = test.pop("confusion")
            score = (val or test)["acc1"]
            improved = self.selection.offer(epoch, score, test)
            self.last_test = {k: test.get(k) for k in ("acc1", "acc5", "err1", *SHOT_KEYS)}
            self.epochs_done = epoch + 1
            fields: dict[str, Any] = {
                "epoch": epoch,
                "lr": lr,
                "seconds": time.monotonic() - t0,
                "train": outcome.meters.result(),
                "eval": test,
                "best_acc1": self.selection.test.get("acc1"),
                "best_epoch": self.selection.epoch,
            }
            if val is not None:
                val.pop("confusion", None)
                fields["val"] = {k: val[k] for k in ("loss", "acc1", "acc5")}
                fields["best_val_acc1"] = self.selection.score
            # the epoch's numbers are logged before its checkpoint: a disk that fills while saving
            # must not cost them (a kill in between resumes from the epoch before)
            self.sink.emit("epoch", **fields)
            if improved:
                self.write_confusion(confusion, epoch)
                self.save("best.pt", self.checkpoint_payload(epoch + 1, 0, None), epoch, True)
            self.save("last.pt", self.checkpoint_payload(epoch + 1, 0, None), epoch, False)
            if distributed.any_rank(self.stop.is_set()) and epoch + 1 < cfg.epochs:
                return "stopped"
        return "completed"

    def train_phase(self, epoch: int, lr: float, start: int, meters: TrainMeters) -> EpochOutcome:
        for plugin in self.plugins:
            plugin.set_training(True)
        if any(getattr(plugin, "skips_training", False) for plugin in self.plugins):
            return EpochOutcome(meters, stopped=False, next_step=0)  # tau_norm: no pass over the data
        loader = make_loader(
            self.data,
            self.data.train,
            batch_size=self.cfg.batch_size,
            train_transform=True,
            shuffle=True,
            sampler=self.sampler,
            generator=epoch_generator(self.cfg.seed, epoch),
            placement=self.placement,
        )
        batches = mix_batches(
            self.cfg.mix,
            loader.batches(start),
            seed=self.cfg.seed,
            epoch=epoch,
            num_batches=len(loader),
            batch_size=self.cfg.batch_size,
            device=self.runtime.device,
            start=start,
        )
        parts = TrainParts(
            self.forward,
            self.criterion,
            self.optimizer,
            self.runtime,
            plugins=self.plugins,
            scaler=self.scaler,
            sink=self.sink,
            nonfinite=self.cfg.nonfinite,
            should_stop=self.stop.is_set,
            grad_sync=self.grad_sync,
        )
        return train_one_epoch(parts, batches, epoch=epoch, lr=lr, start_step=start, meters=meters)

    def evaluate_split(self, name: str) -> dict[str, Any]:
        # Without sync_bn each rank's BatchNorm statistics are its own: evaluate rank 0's everywhere
        distributed.broadcast_module(self.model, buffers_only=True)
        loader = make_loader(
            self.data,
            name,
            batch_size=self.cfg.eval_batch_size,
            train_transform=False,
            shuffle=False,
            placement=self.placement,
        )
        return evaluate(
            self.eval_forward,
            loader,
            self.criterion,
            self.runtime,
            self.data.num_classes,
            self.data.train_counts,
        )

    def write_confusion(self, confusion: torch.Tensor, epoch: int) -> None:
        if not self.world.is_main:
            return
        path = self.artifacts_dir / "confusion_matrix.json"
        doc = {
            "split": "test",
            "epoch": epoch,
            "class_names": self.data.class_names,
            "matrix": confusion.tolist(),
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    def summary(self) -> dict[str, Any]:
        best = self.selection.test
        out = {
            "best_acc1": best.get("acc1"),
            "best_epoch": self.selection.epoch,
            "last_acc1": self.last_test.get("acc1"),
            "acc5": best.get("acc5"),
            "err1": best.get("err1"),
            **{k: best.get(k) for k in SHOT_KEYS},
            "epochs_done": self.epochs_done,
            "seconds": self.elapsed(),
            "selected_on": self.selection.split,
            "leaky": is_leaky(self.cfg),
        }
        if self.selection.split == "val":
            out["best_val_acc1"] = self.selection.score
        return out


# OSError: the machine, not the code (a full disk, a vanished mount): a message, not a traceback
USER_ERRORS: tuple[type[Exception], ...] = (
    RunError,
    DataError,
    DeviceError,
    CheckpointError,
    NonFiniteLoss,
    OSError,
)


def _user_errors() -> tuple[type[Exception], ...]:
    """The registries' own user-facing errors, when those modules import."""
    extra: list[type[Exception]] = []
    for module, names in (
        ("engine.models", ("ModelBuildError", "LayerKeyError")),
        ("engine.losses", ("LossBuildError",)),
        ("engine.doctor", ("DiagnosisError",)),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        extra += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return USER_ERRORS + tuple(extra)


def run(
    cfg: EngineConfig,
    run_dir: Path,
    sink: EventSink,
    *,
    resume: bool = False,
    stop: threading.Event | None = None,
) -> str:
    """Train one run; returns its final status (completed, stopped or failed). Never raises for a
    failure of the run itself: every ending is a ``run_finished`` event."""
    stop = stop or threading.Event()
    trainer = Trainer(cfg, Path(run_dir), sink, stop)
    status, error = "failed", None
    try:
        trainer.setup(resume)
        trainer.run_started()
        # stopped during set-up (a long diagnosis): keep what exists so far; every rank agrees
        if distributed.any_rank(stop.is_set()):
            meters = None
            if trainer.start_step and trainer.resumed_meters:  # keep a resumed epoch's running sums
                meters = TrainMeters(trainer.runtime.device)
                meters.load_state_dict(trainer.resumed_meters)
            payload = trainer.checkpoint_payload(trainer.start_epoch, trainer.start_step, meters)
            trainer.save("last.pt", payload, trainer.start_epoch, False)
            status = "stopped"
        else:
            status = trainer.train_epochs()
    except _user_errors() as exc:
        error = str(exc)
    except KeyboardInterrupt:
        status, error = "stopped", "interrupted"
    except Exception as exc:  # a bug, not a user mistake: keep the traceback for stderr.log
        traceback.print_exc(file=sys.stderr)
        error = f"{type(exc).__name__}: {exc}"
    rank = distributed.world().rank
    if rank > 0 and error is not None:  # rank k's events go nowhere: its reason goes to stderr.rank{k}.log
        print(f"rank {rank}: {error}", file=sys.stderr, flush=True)
    summary = trainer.summary()
    sink.emit("run_finished", status=status, summary=summary, error=error)
    # Its DDP wrapper holds the process group and must go before the group does. DDP lies in
    # reference cycles, so only a collection frees it; left to interpreter exit, its reducer was
    # torn down after gloo's threads in no set order (a rank's SIGABRT, once in CI).
    del trainer
    if distributed.world().enabled:
        gc.collect()
    distributed.destroy(in_step=error is None)
    return status
