"""Handing the curves on: runs as TensorBoard event files or as CSV per metric plus a JSON summary.

The curves come from each run's event stream, read through ``mdtui.runs.rundir`` (every epoch and
every step event, not the reduced state, which keeps a thinned step history). Names of the scalars,
shared by both formats:

* per epoch (x = the epoch, 1-based): ``train/loss``, ``train/acc1`` (and a method's extra terms,
  ``train/loss_channel``, ...), ``eval/loss``, ``eval/acc1``, ``eval/acc5``, ``eval/many|medium|few``,
  ``lr``, ``best_acc1``, ``epoch_seconds``; ``per_class/NNN`` is class NNN's test accuracy;
* per step (x = the global step, ``epoch * steps_per_epoch + step``): ``step/loss``, ``step/lr`` and
  the step's extra terms.

TensorBoard files are written with the ``tensorboard`` package's own event writer and protocol
buffers (no TensorFlow, no torch: the manager never imports torch); hyper-parameters go to the HParams
plugin (one session per run, trial id = run id). ``tensorboard`` is an optional extra
(``pip install 'mdtui[tensorboard]'``); ``TensorBoardMissing`` says so when it is absent.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.runs.rundir import RunEvents
from mdtui.system.fs import atomic_write_json, read_json, sanitize_name

if TYPE_CHECKING:
    from mdtui.runs.store import RunRecord

FORMATS = ("tensorboard", "csv")
# engine config keys that are paths or identities, not hyper-parameters
NOT_HPARAMS = ("run_id", "init_checkpoint", "cache_dir", "data.root", "combine_path", "experiment")


class TensorBoardMissing(Exception):
    """The ``tensorboard`` package is not installed (a user-facing message)."""


@dataclass
class Curves:
    """One run's scalars, hyper-parameters and per-class accuracies, as exported."""

    rec: RunRecord
    hparams: dict[str, str | float | bool] = field(default_factory=dict)
    # (x, wall time, {tag: value}) per epoch (x = epoch, 1-based) and per step (x = global step)
    epochs: list[tuple[int, float, dict[str, float]]] = field(default_factory=list)
    steps: list[tuple[int, float, dict[str, float]]] = field(default_factory=list)
    per_class: list[tuple[int, float, list[float]]] = field(default_factory=list)  # (epoch, t, accs)
    started_t: float | None = None

    def tags(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, _, values in (*self.epochs, *self.steps):
            seen.update(dict.fromkeys(values))
        return list(seen)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _numbers(prefix: str, block: Any, skip: tuple[str, ...] = ()) -> dict[str, float]:
    if not isinstance(block, dict):
        return {}
    out = {}
    for key, value in block.items():
        number = _number(value)
        if number is not None and key not in skip:
            out[f"{prefix}{key}"] = number
    return out


def hparams_of(config: dict[str, Any], rec: RunRecord) -> dict[str, str | float | bool]:
    """The run's engine config as flat hyper-parameters (``optim.lr``: 0.1), its seed and sweep point;
    lists become their JSON text, paths and ids are left out."""
    flat: dict[str, str | float | bool] = {"experiment": rec.experiment, "seed": float(rec.seed)}

    def walk(prefix: str, value: Any) -> None:
        if prefix in NOT_HPARAMS:
            return
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (bool, str)):
            flat[prefix] = value
        elif _number(value) is not None:
            flat[prefix] = float(value)
        elif isinstance(value, list):
            flat[prefix] = json.dumps(value)

    walk("", config)
    return flat


def read_curves(rec: RunRecord) -> Curves:
    """Everything a run's event stream says that is exported (a missing stream: no scalars)."""
    run_dir = Path(rec.run_dir)
    config = read_json(run_dir / "config.json")
    curves = Curves(rec, hparams_of(config if isinstance(config, dict) else {}, rec))
    steps_per_epoch = 0
    counter = 0  # the global step when steps_per_epoch is unknown
    for event in RunEvents(run_dir, rec.run_id).drain():
        if not isinstance(event, dict):
            continue
        kind, t = event.get("type"), _number(event.get("t")) or 0.0
        if kind == "run_started":
            steps_per_epoch = int(_number(event.get("steps_per_epoch")) or 0)
            curves.started_t = curves.started_t or t
        elif kind == "step":
            epoch, step = int(_number(event.get("epoch")) or 0), int(_number(event.get("step")) or 0)
            x = epoch * steps_per_epoch + step if steps_per_epoch else counter
            counter += 1
            values = _numbers("step/", event, skip=("v", "t", "epoch", "step"))
            if values:
                curves.steps.append((x, t, values))
        elif kind == "epoch":
            epoch = int(_number(event.get("epoch")) or 0) + 1
            evaluation = event.get("eval") if isinstance(event.get("eval"), dict) else {}
            values = {
                **_numbers("train/", event.get("train")),
                **_numbers("eval/", evaluation, skip=("per_class",)),
                **_numbers("", {k: event.get(k) for k in ("lr", "best_acc1")}),
            }
            seconds = _number(event.get("seconds"))
            if seconds is not None:
                values["epoch_seconds"] = seconds
            curves.epochs.append((epoch, t, values))
            accs = evaluation.get("per_class")
            if isinstance(accs, list) and accs:
                curves.per_class.append(
                    (epoch, t, [_number(a) if _number(a) is not None else math.nan for a in accs])
                )
    return curves


def run_folder(out: Path, rec: RunRecord) -> Path:
    """``OUT/<experiment>/<run id>``: one TensorBoard run per mdtui run, grouped by experiment."""
    return out / sanitize_name(rec.experiment) / rec.run_id


# --------------------------------------------------------------------------------------- TensorBoard


def require_tensorboard() -> Any:
    """The tensorboard modules the writer uses; TensorBoardMissing (what to install) without them."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as exc:
        raise TensorBoardMissing(
            "`--format tensorboard` needs the tensorboard package, which is not installed "
            f"({exc}); install it with `pip install 'mdtui[tensorboard]'` (or `pip install tensorboard`), "
            "or export CSV with `--format csv`"
        ) from None
    return event_pb2, summary_pb2, api_pb2, metadata, plugin_data_pb2, summary_v2, EventFileWriter


_STATUS = {"completed": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "stopped": "STATUS_ABORTED"}


def write_tensorboard(all_curves: list[Curves], out: Path) -> list[Path]:
    """One event file per run under ``run_folder``, and the HParams experiment at ``out``; returns
    the run folders written."""
    event_pb2, summary_pb2, api_pb2, metadata, plugin_data_pb2, summary_v2, EventFileWriter = (
        require_tensorboard()
    )
    out.mkdir(parents=True, exist_ok=True)

    def scalar_event(tag: str, value: float, step: int, t: float) -> Any:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        return event_pb2.Event(wall_time=t, step=step, summary=summary)

    written: list[Path] = []
    for curves in all_curves:
        folder = run_folder(out, curves.rec)
        folder.mkdir(parents=True, exist_ok=True)
        writer = EventFileWriter(str(folder))
        start = curves.started_t or curves.rec.started_t or curves.rec.created_t
        session = summary_v2.hparams_pb(curves.hparams, trial_id=curves.rec.run_id, start_time_secs=start)
        writer.add_event(event_pb2.Event(wall_time=start, summary=session))
        for x, t, values in (*curves.epochs, *curves.steps):
            for tag, value in values.items():
                writer.add_event(scalar_event(tag, value, x, t))
        for epoch, t, accs in curves.per_class:
            for index, acc in enumerate(accs):
                if not math.isnan(acc):
                    writer.add_event(scalar_event(f"per_class/{index:03d}", acc, epoch, t))
        status = _STATUS.get(str(curves.rec.status))
        if status is not None:  # a run still going has no end yet
            end = plugin_data_pb2.HParamsPluginData(
                session_end_info=plugin_data_pb2.SessionEndInfo(
                    status=getattr(api_pb2, status), end_time_secs=curves.rec.ended_t or time.time()
                )
            )
            value = summary_pb2.Summary.Value(
                tag=metadata.SESSION_END_INFO_TAG,
                metadata=metadata.create_summary_metadata(end),
                tensor=metadata.NULL_TENSOR,
            )
            writer.add_event(
                event_pb2.Event(
                    wall_time=curves.rec.ended_t or time.time(), summary=summary_pb2.Summary(value=[value])
                )
            )
        writer.close()
        written.append(folder)
    # the HParams dashboard's columns: every hyper-parameter and every epoch metric of the runs
    names = list(dict.fromkeys(k for c in all_curves for k in c.hparams))
    tags = list(dict.fromkeys(tag for c in all_curves for _, _, values in c.epochs for tag in values))
    experiment = summary_v2.hparams_config_pb(
        hparams=[summary_v2.HParam(n) for n in names], metrics=[summary_v2.Metric(t) for t in tags]
    )
    writer = EventFileWriter(str(out))
    writer.add_event(event_pb2.Event(wall_time=time.time(), summary=experiment))
    writer.close()
    return written


# --------------------------------------------------------------------------------------- CSV + JSON


def csv_name(tag: str) -> str:
    """``eval/acc1`` -> ``eval.acc1.csv`` (one file per metric)."""
    return tag.replace("/", ".") + ".csv"


def write_csv(all_curves: list[Curves], out: Path) -> list[Path]:
    """One CSV per metric (rows: run, experiment, seed, x, value) and ``summary.json``; returns the
    files written."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[list[Any]]] = {}
    step_tags: set[str] = set()
    for curves in all_curves:
        rec = curves.rec
        for kind, series in (("epoch", curves.epochs), ("step", curves.steps)):
            for x, t, values in series:
                for tag, value in values.items():
                    rows.setdefault(tag, []).append([rec.run_id, rec.experiment, rec.seed, x, value, t])
                    if kind == "step":
                        step_tags.add(tag)
        for epoch, t, accs in curves.per_class:
            for index, acc in enumerate(accs):
                rows.setdefault("per_class", []).append(
                    [rec.run_id, rec.experiment, rec.seed, epoch, index, "" if math.isnan(acc) else acc, t]
                )
    written: list[Path] = []
    for tag, lines in rows.items():
        x = "step" if tag in step_tags else "epoch"
        header = ["run_id", "experiment", "seed", x, "value", "wall_time"]
        if tag == "per_class":
            header = ["run_id", "experiment", "seed", "epoch", "class", "accuracy", "wall_time"]
        path = out / csv_name(tag)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(lines)
        written.append(path)
    summary_path = out / "summary.json"
    atomic_write_json(summary_path, {"runs": [summary_of(c) for c in all_curves]})
    written.append(summary_path)
    return written


def summary_of(curves: Curves) -> dict[str, Any]:
    """A run's facts, final numbers and hyper-parameters for ``summary.json``."""
    rec = curves.rec
    last_per_class = curves.per_class[-1][2] if curves.per_class else []
    return {
        "run_id": rec.run_id,
        "experiment": rec.experiment,
        "group": rec.group,
        "status": str(rec.status),
        "seed": rec.seed,
        "sweep": rec.sweep,
        "run_dir": str(rec.run_dir),
        "started_t": rec.started_t,
        "ended_t": rec.ended_t,
        "epochs_done": rec.epochs_done,
        "total_epochs": rec.total_epochs,
        "best_acc1": rec.best_acc1,
        "best_epoch": rec.best_epoch + 1 if rec.best_epoch is not None else None,  # 1-based, as shown
        "last_acc1": rec.last_acc1,
        "acc5": rec.acc5,
        "many": rec.many,
        "medium": rec.medium,
        "few": rec.few,
        "per_class_last": [None if math.isnan(a) else a for a in last_per_class],
        "metrics": [*curves.tags(), *(["per_class"] if curves.per_class else [])],
        "hparams": curves.hparams,
    }


def export_runs(records: list[RunRecord], out: Path, fmt: str) -> list[Path]:
    """Export ``records`` to ``out`` in ``fmt`` (``FORMATS``); returns what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "tensorboard":
        require_tensorboard()  # say it is missing before reading anything
    all_curves = [read_curves(rec) for rec in records]
    return write_tensorboard(all_curves, out) if fmt == "tensorboard" else write_csv(all_curves, out)
