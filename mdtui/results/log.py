"""RESULTS.md: the research notebook, written by the machine (docs/results.md).

When a run ends (``mdtui.execution.ending.settle``, before exit.json), ``record_finished`` draws the
run's plots (``mdtui.results.plots``) and brings its lines in the log to what its status says: a
completed run is one bullet under the ``## <group>`` heading of its experiment (the notebook's shape,
reference-spec.md §7.5), a stopped/failed/lost run one short line under ``## Incomplete
runs`` at the end of the file. It converges: recording a run again changes nothing, a run that
completes after an incomplete session loses its incomplete line, a run that ends again replaces
its unedited incomplete line. Lines a person wrote are never touched (``mdtui.results.markdown``
does the markdown: escaping, headings, locked rewrites). It also attaches notes.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.registry.plan import Plan, knobs, load_plan
from mdtui.results.markdown import (
    INCOMPLETE_HEADING,
    LOG_PREAMBLE,
    append_entry,
    headings,
    insert_in_section,
    lock_path,
    md_code,
    md_escape,
    one_line,
    replace_line,
)
from mdtui.results.stats import Delta, delta_interval, format_delta, summarize
from mdtui.runs.rundir import RunEvents
from mdtui.runs.status import INCOMPLETE, RunStatus
from mdtui.system.formats import fmt_paper, fmt_pct, format_knobs
from mdtui.system.fs import atomic_write_json, atomic_write_text, file_lock, read_json

if TYPE_CHECKING:
    from engine.schema.events import RunState
    from mdtui.runs.store import RunRecord, RunStore

ENTRY_FILE = "results_entry.json"  # in the run directory: the line mdtui last wrote for the run


_pct = partial(fmt_pct, missing="–")  # RESULTS.md: an unknown figure is a dash


# --------------------------------------------------------------------------- entries (pure)


@dataclass(frozen=True)
class EntryFacts:
    """Everything one log line shows; built by ``entry_facts``, rendered by ``format_entry``."""

    experiment: str
    run_id: str
    status: str = RunStatus.COMPLETED.value
    knobs: dict[str, Any] = field(default_factory=dict)
    is_baseline: bool = False
    acc1: float | None = None
    acc5: float | None = None
    err1: float | None = None
    best_epoch: int | None = None  # 0-based, printed 1-based
    epochs: int | None = None
    epochs_done: int | None = None
    many: float | None = None
    medium: float | None = None
    few: float | None = None
    long_tailed: bool = False
    # the experiment's mean acc1 over its completed seeds minus the baseline's, with its interval
    delta: Delta | None = None
    seed: int | None = None
    leaky: bool = False
    note: str = ""
    reason: str = ""
    paper: dict[str, Any] = field(default_factory=dict)  # the published figures (experiment key)


def note_suffix(note: str) -> str:
    return f" — note: {md_escape(note)}" if one_line(note) else ""


def format_entry_base(f: EntryFacts) -> str:
    """A completed run's bullet, without its note (``note_suffix`` is appended to it)."""
    head = f"- {md_code(f.experiment)}"
    if f.is_baseline:
        head += " (baseline)"
    elif f.knobs:
        head += f" ({md_code(format_knobs(f.knobs))})"
    shown = {"acc1": f.acc1, "acc5": f.acc5, "err1": f.err1}
    parts = [", ".join(f"{k} is {_pct(v)}{_paper(f, k)}" for k, v in shown.items())]
    if f.best_epoch is not None:
        total = f.epochs or f.epochs_done
        parts[0] += f", best epoch {f.best_epoch + 1}" + (f"/{total}" if total else "")
    if f.long_tailed:
        split = {"many": f.many, "medium": f.medium, "few": f.few}
        parts.append(", ".join(f"{k} {_pct(v)}{_paper(f, k)}" for k, v in split.items()))
    if f.delta is not None:
        parts.append(f"Δ acc1 {format_delta(f.delta, seeds=True)}")
    tail = f"seed {f.seed}, " if f.seed is not None else ""
    parts.append(f"{tail}run {md_code(f.run_id)}")
    line = f"{head}: " + "; ".join(parts)
    return line + (" **leaky**" if f.leaky else "")


def _paper(f: EntryFacts, metric: str) -> str:
    return fmt_paper(f.paper.get(metric))


def format_incomplete_base(f: EntryFacts) -> str:
    """A stopped/failed/lost run's short line, without its note."""
    line = f"- {md_code(f.experiment)} {f.status}"
    if f.epochs_done is not None:
        line += f" after {f.epochs_done}" + (f"/{f.epochs}" if f.epochs else "") + " epochs"
    line += f", run {md_code(f.run_id)}"
    if one_line(f.reason):
        line += f": {md_escape(f.reason[:200])}"
    return line


def run_marker(run_id: str) -> str:
    """The text that identifies a run's line in the log (used to keep appends idempotent)."""
    return f"run {md_code(run_id)}"


# --------------------------------------------------------------------------- runs -> facts


def find_plan(store: RunStore) -> Plan | None:
    """The plan that owns ``store``: the store's experiments file, $MDTUI_EXPERIMENTS, or the
    experiments.toml of its project; only one whose ``runs_dir`` is this store's counts."""
    runs_dir = Path(store.runs_dir).resolve()
    project = getattr(store, "project_dir", None) or runs_dir.parent
    candidates = [
        getattr(store, "experiments_file", None),
        os.environ.get("MDTUI_EXPERIMENTS"),
        Path(project) / "experiments.toml",
        runs_dir.parent / "experiments.toml",
    ]
    for candidate in dict.fromkeys(str(c) for c in candidates if c):
        if not Path(candidate).is_file():
            continue
        try:
            plan = load_plan(Path(candidate))
        except Exception:  # an invalid toml must not stop the log: fall back to the index
            continue
        if Path(plan.settings.runs_dir).resolve() == runs_dir:
            return plan
    return None


def results_log_path(store: RunStore, plan: Plan | None) -> Path:
    if plan is not None:
        return Path(plan.settings.results_log)
    return Path(store.runs_dir).resolve().parent / "RESULTS.md"


def is_long_tailed(config: dict[str, Any], many: Any = None, medium: Any = None, few: Any = None) -> bool:
    """Long-tailed data: an imbalance ratio > 1, a list-file LT dataset, or a many/medium/few split."""
    data = config.get("data")
    if isinstance(data, dict):
        ratio = data.get("imbalance_ratio")
        if (isinstance(ratio, (int, float)) and ratio > 1) or data.get("name") == "oltr":
            return True
    # Balanced data has one shot group only (all classes "many"): two or more mean a real tail.
    return sum(v is not None for v in (many, medium, few)) >= 2


def load_state(run_dir: Path) -> tuple[RunState, list[dict[str, Any]]]:
    """The reduced run state and the raw protocol events of ``run_dir/events.jsonl``."""
    follower = RunEvents(run_dir)
    events = [e for e in follower.drain() if isinstance(e, dict)]
    return follower.state, events


def _metric(rec: RunRecord, summary: dict[str, Any], key: str, index_key: str | None = None) -> Any:
    value = getattr(rec, index_key or key, None)
    return value if value is not None else summary.get(key)


def entry_facts(store: RunStore, plan: Plan | None, rec: RunRecord, state: RunState) -> EntryFacts:
    """What the log says about ``rec``: metrics from the index (events as fallback), knobs and Δ."""
    summary = state.summary or {}
    config = read_json(Path(rec.run_dir) / "config.json") or state.config or {}
    acc1 = _metric(rec, summary, "best_acc1")
    err1 = _metric(rec, summary, "err1")
    if err1 is None and acc1 is not None:
        err1 = 100.0 - acc1
    many, medium, few = (_metric(rec, summary, k) for k in ("many", "medium", "few"))
    knob_values: dict[str, Any] = dict(rec.sweep or {})
    is_baseline, delta = False, None
    exp = plan.experiments.get(rec.experiment) if plan is not None else None
    if exp is not None:
        knob_values = knobs(plan, exp)
        is_baseline = exp.baseline
        base_exp = plan.baseline_of(exp)
        if base_exp is not None and not is_baseline and acc1 is not None:
            delta = seeds_delta(store, rec, acc1, base_exp.name)
    leaky = bool(rec.leaky or summary.get("leaky"))
    return EntryFacts(
        experiment=rec.experiment,
        run_id=rec.run_id,
        status=rec.status,
        knobs=knob_values,
        is_baseline=is_baseline,
        acc1=acc1,
        acc5=_metric(rec, summary, "acc5"),
        err1=err1,
        best_epoch=_metric(rec, summary, "best_epoch"),
        epochs=rec.total_epochs or state.total_epochs,
        epochs_done=rec.epochs_done if rec.epochs_done is not None else state.epochs_done,
        many=many,
        medium=medium,
        few=few,
        long_tailed=is_long_tailed(config, many, medium, few),
        delta=delta,
        seed=rec.seed,
        leaky=leaky,
        note=rec.note or "",
        reason=rec.error or state.error or _default_reason(rec),
        paper=dict(exp.paper) if exp is not None else {},
    )


def _completed_acc1(store: RunStore, experiment: str) -> dict[str, float]:
    runs = store.list_runs(experiment=experiment, statuses=[RunStatus.COMPLETED])
    return {r.run_id: r.best_acc1 for r in runs if r.best_acc1 is not None}


def seeds_delta(store: RunStore, rec: RunRecord, acc1: float, baseline: str) -> Delta | None:
    """Δ acc1 of ``rec``'s experiment (its completed seeds, ``rec`` included even before the index
    says it completed) against the baseline experiment's completed seeds, with its interval."""
    mine = _completed_acc1(store, rec.experiment)
    mine[rec.run_id] = acc1
    base = _completed_acc1(store, baseline)
    base.pop(rec.run_id, None)
    return delta_interval(summarize(mine.values()), summarize(base.values()))


def _default_reason(rec: RunRecord) -> str:
    if rec.status == RunStatus.LOST:
        return "the supervisor vanished without an exit record"
    if rec.exit_code not in (None, 0):
        return f"exit code {rec.exit_code}"
    return ""


def write_entry(log: Path, rec: RunRecord, facts: EntryFacts) -> bool:
    """Bring the run's lines in ``log`` to what its status says, in one locked rewrite:

    * completed: its bullet under ``## <group>`` (once); its lines under ``## Incomplete runs``
      (an earlier failed/stopped/lost session, notes on it) go;
    * failed/stopped/lost: one line under ``## Incomplete runs``; an earlier one that mdtui wrote and
      nobody edited is replaced by the new one (a resumed run that ended again), an edited one stays.

    Returns True when the run's own line was written; it is remembered for ``attach_note``.
    """
    completed = rec.status == RunStatus.COMPLETED
    base = format_entry_base(facts) if completed else format_incomplete_base(facts)
    line = base + note_suffix(facts.note)
    heading = rec.group if completed else INCOMPLETE_HEADING
    marker = run_marker(rec.run_id)
    saved = read_json(Path(rec.run_dir) / ENTRY_FILE)
    previous = saved.get("line") if isinstance(saved, dict) and saved.get("heading") == heading else None
    written = False

    def edit(text: str) -> str:
        nonlocal written
        if completed:
            text = drop_run_lines(text, INCOMPLETE_HEADING, marker)
        mine = run_lines(text, heading, marker)
        if not mine:
            written = True
            return insert_in_section(text, heading, line)
        if not completed and previous is not None and previous in mine and previous != line:
            written = True
            return replace_in_section(text, heading, previous, line)
        return text

    rewrite_log(log, edit)
    if written and Path(rec.run_dir).is_dir():  # a deleted run folder is not re-created for this file
        atomic_write_json(
            Path(rec.run_dir) / ENTRY_FILE, {"log": str(log), "heading": heading, "base": base, "line": line}
        )
    return written


def rewrite_log(log: Path, edit: Callable[[str], str]) -> bool:
    """Apply ``edit`` to the log's text under its lock, writing only when it changed (atomically)."""
    log = Path(log)
    with file_lock(lock_path(log)):
        text = log.read_text(encoding="utf-8") if log.exists() else LOG_PREAMBLE
        new = edit(text)
        if new == text:
            return False
        atomic_write_text(log, new)
    return True


def section_spans(text: str, heading: str) -> list[tuple[int, int]]:
    """``[start, end)`` line ranges of the bodies of every ``## heading`` section of ``text``."""
    lines = text.splitlines()
    marks = headings(lines)
    spans = []
    for n, (i, level, title) in enumerate(marks):
        if level == 2 and title == one_line(heading):
            end = next((j for j, lv, _ in marks[n + 1 :] if lv <= 2), len(lines))
            spans.append((i + 1, end))
    return spans


def run_lines(text: str, heading: str, marker: str) -> list[str]:
    """The lines of the ``## heading`` sections of ``text`` that name ``marker``."""
    lines = text.splitlines()
    spans = section_spans(text, heading)
    return [lines[k] for start, end in spans for k in range(start, end) if marker in lines[k]]


def drop_run_lines(text: str, heading: str, marker: str) -> str:
    """``text`` without the lines of the ``## heading`` sections that name ``marker``."""
    lines = text.splitlines()
    drop = {k for start, end in section_spans(text, heading) for k in range(start, end) if marker in lines[k]}
    if not drop:
        return text
    return "\n".join(ln for k, ln in enumerate(lines) if k not in drop) + "\n"


def replace_in_section(text: str, heading: str, old: str, new: str) -> str:
    lines = text.splitlines()
    for start, end in section_spans(text, heading):
        for k in range(start, end):
            if lines[k] == old:
                lines[k] = new
                return "\n".join(lines) + "\n"
    return text


# --------------------------------------------------------------------------- plots


def _train_counts(events: list[dict[str, Any]]) -> list[int] | None:
    """Per-class training counts from ``run_started`` (top level or one block down), if recorded."""
    for event in events:
        if event.get("type") != "run_started":
            continue
        places = [event, *(v for v in event.values() if isinstance(v, dict))]
        for place in places:
            counts = place.get("train_counts")
            if isinstance(counts, list) and counts and all(isinstance(c, int) for c in counts):
                return counts
    return None


def _per_class(events: list[dict[str, Any]], best_epoch: int | None) -> list[float] | None:
    """Per-class eval accuracy at the best epoch (the reported model), else at the last epoch."""
    found: dict[int, list[float]] = {}
    for event in events:
        ev = event.get("eval") if event.get("type") == "epoch" else None
        values = ev.get("per_class") if isinstance(ev, dict) else None
        if isinstance(values, list) and values and isinstance(event.get("epoch"), int):
            found[event["epoch"]] = [float(v) if isinstance(v, (int, float)) else 0.0 for v in values]
    if not found:
        return None
    return found.get(best_epoch) if best_epoch in found else found[max(found)]


def write_plots(
    rec: RunRecord, state: RunState, events: list[dict[str, Any]], long_tailed: bool
) -> list[Path]:
    """``artifacts/curves.png`` and, for long-tailed data, ``artifacts/per_class.png``."""
    from mdtui.results.plots import plot_curves, plot_per_class

    artifacts = Path(rec.run_dir) / "artifacts"
    written: list[Path] = []
    if state.epochs:
        written.append(plot_curves(state, artifacts / "curves.png", f"{rec.experiment} · {rec.run_id}"))
    counts = _train_counts(events)
    per_class = _per_class(events, state.best_epoch)
    if long_tailed and counts and per_class and len(counts) == len(per_class):
        title = f"{rec.experiment} · per-class accuracy"
        written.append(plot_per_class(per_class, counts, artifacts / "per_class.png", title))
    return written


# --------------------------------------------------------------------------- entry points


def record_finished(
    store: RunStore,
    run_id: str,
    *,
    plan: Plan | None = None,
    record: RunRecord | None = None,
    plots: bool = True,
) -> None:
    """Draw a finished run's plots, then bring its RESULTS.md lines up to date (``write_entry``).

    ``record`` is the run as it is about to be indexed (its ending writes the log before the index);
    by default the indexed record. Runs that are not final (or were cancelled before starting) are
    left out. Idempotent: recording a run twice writes nothing the second time but its plots.
    """
    rec = record if record is not None else store.get(run_id)
    if rec is None:
        raise LookupError(f"no run {run_id!r} in {store.runs_dir}")
    if rec.status != RunStatus.COMPLETED and rec.status not in INCOMPLETE:
        return
    plan = plan if plan is not None else find_plan(store)
    state, events = load_state(rec.run_dir)
    facts = entry_facts(store, plan, rec, state)
    if plots and Path(rec.run_dir).is_dir():  # plots first: everything in the run folder, then the log
        try:
            write_plots(rec, state, events, facts.long_tailed)
        except Exception:  # a plot is a nicety; the log entry must still be written
            print(f"mdtui: plots of {rec.run_id} not drawn:\n{traceback.format_exc()}", file=sys.stderr)
    write_entry(results_log_path(store, plan), rec, facts)


def attach_note(store: RunStore, run_id: str, text: str) -> str:
    """Store a note on a run (index; the store mirrors it into run.json) and show it in the log.

    The run's log line is re-rendered in place only when it is still exactly what mdtui wrote;
    otherwise (a person edited it) a separate note line is appended to its section. Returns
    ``"updated"``, ``"appended"`` or ``"stored"`` (the run has no log entry yet).
    """
    note = one_line(text)
    store.update(run_id, note=note)
    rec = store.get(run_id)
    saved = read_json(Path(rec.run_dir) / ENTRY_FILE)
    if not isinstance(saved, dict) or not {"log", "heading", "base", "line"} <= saved.keys():
        return "stored"
    log = Path(saved["log"])
    new_line = saved["base"] + note_suffix(note)
    if replace_line(log, saved["line"], new_line):
        atomic_write_json(Path(rec.run_dir) / ENTRY_FILE, {**saved, "line": new_line})
        return "updated"
    append_entry(log, saved["heading"], f"- note on {run_marker(run_id)}: {md_escape(note)}")
    return "appended"
