"""Putting lost (and, when asked, failed) runs back to work: the retry policy and the scheduler's pass.

``[settings] on_lost = "resume"`` lets every experiment's lost runs be resumed (``RESUME_RETRIES``
times); an experiment's ``retries = { lost = 2, failed = 1 }`` says how often for itself. The policy is
recorded in the run's ``run.json`` (``retry_policy``) when the run is created, so a run keeps the
rules it was started under. Each pass of the scheduler (``retry_ended``) resumes the eligible runs in
their own directories from ``checkpoints/last.pt`` through the launcher (``mdtui run --resume``'s
path: devices reserved atomically, the old ending set aside), and appends the ending it answered to
``run.json``'s ``retries`` list: that list is the attempt count.

``should_retry`` is the pure decision. It never loops: a run is not retried when its retries for that
status are used up, when it has no ``last.pt``, or when it ended the same way as its previous retry
(the same status and reason) without finishing a single epoch more -- a deterministic failure would
only burn the count, and the user should look at it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdtui.execution.launching import LaunchError, NoDevice
from mdtui.execution.ledger import engine_alive
from mdtui.runs.status import LIVE, RunStatus
from mdtui.system.fs import read_json

if TYPE_CHECKING:
    from mdtui.execution.launching import Launcher
    from mdtui.runs.store import RunRecord, RunStore

POLICY_KEY = "retry_policy"  # in run.json: {"lost": n, "failed": m}
HISTORY_KEY = "retries"  # in run.json: the endings that were retried, oldest first
RETRYABLE = (RunStatus.LOST, RunStatus.FAILED)
RECENT_SECONDS = 14 * 86400  # older endings are the user's to resume by hand


@dataclass(frozen=True)
class Retry:
    go: bool
    why: str


def same_failure(a: str | None, b: str | None) -> bool:
    """Two reasons say the same thing (pids, sizes and other numbers aside)."""

    def norm(text: str | None) -> str:
        return re.sub(r"\d+", "#", text or "").strip()

    return norm(a) == norm(b)


def should_retry(
    status: str,
    reason: str | None,
    epochs_done: int,
    policy: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    has_last: bool,
) -> Retry:
    """Whether a run that ended ``status`` (with ``reason``, after ``epochs_done`` epochs in all) is
    resumed once more, under ``policy`` and its earlier ``history`` of retries."""
    allowed = policy.get(str(status), 0) if status in RETRYABLE else 0
    if not isinstance(allowed, int) or allowed <= 0:
        return Retry(False, f"no retries for {status} runs")
    used = sum(1 for h in history if h.get("status") == status)
    if used >= allowed:
        return Retry(False, f"its {allowed} {status} retr{'y' if allowed == 1 else 'ies'} are used up")
    if not has_last:
        return Retry(False, "it has no checkpoints/last.pt to resume from")
    if history:
        previous = history[-1]
        no_progress = epochs_done <= int(previous.get("epochs_done") or 0)
        if previous.get("status") == status and same_failure(previous.get("reason"), reason) and no_progress:
            return Retry(False, "it ended the same way as its last retry without finishing an epoch more")
    return Retry(True, f"{status} retry {used + 1} of {allowed}")


_ANSWERED: dict[str, str] = {}  # run id -> the ending this process already answered (no re-reading)
_RESUMED: set[str] = set()  # runs this process resumed (the scheduler waits for them)
_LAST_PASS: list[float] = []  # when this process's last pass began


def ending_key(rec: RunRecord) -> str:
    """Which ending of a run was answered (``watching`` builds the same text from index rows)."""
    return f"{rec.ended_t}:{rec.status}"


def retry_ended(
    store: RunStore, launcher: Launcher, log: Callable[[str], None], *, now: float | None = None
) -> list[str]:
    """Resume every recently lost or failed run that its policy allows; the run ids resumed."""
    now = time.time() if now is None else now
    _LAST_PASS[:] = [now]
    resumed: list[str] = []
    for rec in store.list_runs(statuses=RETRYABLE):
        if (rec.ended_t or rec.created_t) < now - RECENT_SECONDS or _ANSWERED.get(rec.run_id) == ending_key(
            rec
        ):
            continue
        info = read_json(Path(rec.run_dir) / "run.json")
        policy = info.get(POLICY_KEY) if isinstance(info, dict) else None
        if not isinstance(policy, dict):
            _ANSWERED[rec.run_id] = ending_key(rec)
            continue
        if engine_alive(rec):  # lost while its engine runs on: reconcile takes its own ending later
            continue
        history = [h for h in info.get(HISTORY_KEY) or [] if isinstance(h, dict)]
        if any(h.get("ending") == ending_key(rec) for h in history):
            _ANSWERED[rec.run_id] = ending_key(rec)  # answered by an earlier scheduler
            continue
        has_last = (Path(rec.run_dir) / "checkpoints" / "last.pt").is_file()
        decision = should_retry(rec.status, rec.error, rec.epochs_done, policy, history, has_last=has_last)
        if not decision.go:
            _ANSWERED[rec.run_id] = ending_key(rec)
            if rec.status == RunStatus.LOST or policy.get(str(rec.status)):
                log(f"{rec.run_id} ({rec.experiment}) {rec.status}, not resumed: {decision.why}")
            continue
        entry = {
            "status": str(rec.status),
            "reason": rec.error,
            "epochs_done": rec.epochs_done,
            "ending": ending_key(rec),
            "t": now,
        }
        try:
            launcher.resume(rec)
        except NoDevice:
            continue  # no device now: the next pass tries again
        except LaunchError as exc:
            _ANSWERED[rec.run_id] = ending_key(rec)
            log(f"{rec.run_id} ({rec.experiment}) {rec.status}, not resumed: {exc}")
            continue
        store.update_run_json(Path(rec.run_dir), {HISTORY_KEY: [*history, entry]})
        _ANSWERED.pop(rec.run_id, None)
        _RESUMED.add(rec.run_id)
        resumed.append(rec.run_id)
        log(f"{rec.run_id} ({rec.experiment}) {rec.status}: resumed from last.pt ({decision.why})")
    return resumed


def watching(store: RunStore) -> bool:
    """Keep the scheduler: a run this process resumed is still live (it may end badly again), or a
    recent lost or failed ending has not been answered by a pass yet (the next pass decides about it
    before the scheduler may exit)."""
    for run_id in list(_RESUMED):
        rec = store.get(run_id)
        if rec is not None and rec.status in LIVE:
            return True
        _RESUMED.discard(run_id)
    if not _LAST_PASS:  # no pass yet (a paused queue makes none): nothing to decide
        return False
    # Every recent ending a pass has not answered yet, whenever it ended: a run's ended_t is taken
    # before its row is committed, so a run can end "before" a pass began and still be missed by that
    # pass's query (seen under load: a failed run was never retried and the scheduler exited).
    oldest = _LAST_PASS[-1] - RECENT_SECONDS
    rows = store.index_rows(
        ("run_id", "status", "ended_t", "created_t"), statuses=RETRYABLE
    )  # cheap per pass
    return any(
        (ended or created or 0.0) >= oldest and _ANSWERED.get(run_id) != f"{ended}:{status}"
        for run_id, status, ended, created in rows
    )
