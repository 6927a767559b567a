"""Hand-made plans, run directories and event streams for the results/report tests (no engine runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.schema.events import encode, make_event
from mdtui.registry.plan import Plan, engine_config, load_plan
from mdtui.runs.store import RunRecord, RunStore

PLAN_TOML = """\
[settings]
runs_dir = "runs"
results_log = "RESULTS.md"

[defaults]
epochs = 4
model = "resnet32"
data = { name = "synthetic", num_classes = 4, imbalance_ratio = 10 }

[experiment.ce]
group = "ResNet32 + synth-LT (ρ=10)"
baseline = true
loss = "ce"

[experiment.refl]
group = "ResNet32 + synth-LT (ρ=10)"
loss = { name = "refl", threshold = 0.5 }
optim = { name = "sgd", lr = 1e-5 }
sweep = { "loss.threshold" = [0.5, 0.4] }
paper = { acc1 = 71.8, source = "REFL, synth-LT" }

[experiment.fl]
group = "ResNet32 + synth-LT (ρ=10)"
loss = { name = "fl", gamma = 2.0 }

[experiment.flat]
group = "balanced_synth"
baseline = true
data = { name = "synthetic", num_classes = 4, imbalance_ratio = 1 }
loss = "ce"

[experiment.flat-ls]
group = "balanced_synth"
data = { name = "synthetic", num_classes = 4, imbalance_ratio = 1 }
loss = { name = "ce", label_smoothing = 0.1 }
"""

TRAIN_COUNTS = [200, 92, 43, 20]


def write_plan(root: Path, text: str = PLAN_TOML) -> Plan:
    path = root / "experiments.toml"
    path.write_text(text, encoding="utf-8")
    return load_plan(path)


def write_events(run_dir: Path, run_id: str, status: str, metrics: dict[str, Any], epochs: int) -> None:
    """A plausible events.jsonl: run_started (with train counts), one epoch event each, run_finished."""
    acc1 = metrics.get("best_acc1") or 50.0
    lines = [
        make_event("run_started", run_id, t=1.0, total_epochs=epochs, train_counts=TRAIN_COUNTS, config={})
    ]
    done = metrics.get("epochs_done", epochs)
    for ep in range(done):
        ev_acc = acc1 - (done - 1 - ep) * 2.0
        lines.append(
            make_event(
                "epoch",
                run_id,
                t=2.0 + ep,
                epoch=ep,
                lr=0.1 * (0.5**ep),
                seconds=1.5,
                train={"loss": 2.0 / (ep + 1), "acc1": ev_acc + 5},
                eval={
                    "loss": 2.2 / (ep + 1),
                    "acc1": ev_acc,
                    "acc5": 99.0,
                    "per_class": [90.0, 70.0, 50.0, 30.0],
                },
            )
        )
    if status in ("completed", "stopped", "failed"):
        summary = {k: metrics.get(k) for k in ("best_acc1", "best_epoch", "last_acc1", "acc5", "err1")}
        lines.append(make_event("run_finished", run_id, t=99.0, status=status, summary=summary))
    (run_dir / "events.jsonl").write_text("".join(encode(e) + "\n" for e in lines), encoding="utf-8")


def make_run(
    store: RunStore,
    plan: Plan,
    name: str,
    *,
    run_id: str,
    seed: int = 0,
    status: str = "completed",
    acc1: float | None = 70.0,
    created_t: float | None = None,
    epochs: int = 4,
    events: bool = True,
    **fields: Any,
) -> RunRecord:
    """Create a run of experiment ``name`` in ``store`` with index metrics (and events) as given."""
    exp = plan.experiments[name]
    cfg = engine_config(plan, exp, run_id=run_id, seed=seed)
    rec = store.create_run(exp, cfg, seed=seed, devices=["cpu"], run_id=run_id)
    metrics: dict[str, Any] = {
        "status": status,
        "best_acc1": acc1,
        "best_epoch": epochs - 1,
        "last_acc1": None if acc1 is None else acc1 - 0.5,
        "acc5": None if acc1 is None else min(100.0, acc1 + 20),
        "err1": None if acc1 is None else 100.0 - acc1,
        "epochs_done": epochs,
        "total_epochs": epochs,
    }
    metrics.update(fields)
    if created_t is not None:
        metrics["created_t"] = created_t
    store.update(run_id, **metrics)
    if events:
        write_events(rec.run_dir, run_id, status, metrics, epochs)
    return store.get(run_id)


def md_table_shape_ok(text: str) -> bool:
    """Every markdown table has as many cells per row as its header (pipes escaped with \\ ignored)."""
    import re

    table: list[int] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(len(re.findall(r"(?<!\\)\|", line)))
        elif table:
            if len(set(table)) != 1 or len(table) < 2:
                return False
            table = []
    return True


def load_json(text: str) -> Any:
    return json.loads(text)
