"""Telling the user a run has ended: the ``notify`` command of experiments.toml.

``[settings] notify = ["cmd", "arg", ...]`` (or an experiment's own ``notify``) is recorded in the
run's ``run.json`` when the run is created, so whoever settles the run (its supervisor, a reconcile
after a crash, the Slurm poller) runs the command the run was started with, without reading
experiments.toml again. ``settle`` calls ``notify_ended`` once it has decided a final status.

* Once per ending: ``settle`` is idempotent and may run again for the same run (a supervisor killed
  after exit.json, a reconcile of the same facts); a claim in run.json, taken under the run's lock,
  keyed by the attempt and its status, lets exactly one of them start the command. A lost run that
  a later look finds completed is a new ending and is told again.
* Never in the way: the command runs in a detached helper process (``python -m
  mdtui.execution.notify``) with a time limit (``NOTIFY_TIMEOUT_SECONDS``); the helper kills the
  command's process group when it is up and appends any failure to the run's ``stderr.log``. The
  run's status, files and index are already written and nothing here can change them.
* The command gets the run's facts as environment variables (``notify_env``: ``MDTUI_RUN_ID``,
  ``MDTUI_STATUS``, ``MDTUI_MESSAGE``, ...), so ``["sh", "-c", "curl -d \"$MDTUI_MESSAGE\" ..."]``
  needs no templating language.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mdtui.runs.status import RunStatus
from mdtui.system.fs import append_line, atomic_write_json, file_lock, read_json

if TYPE_CHECKING:
    from mdtui.runs.store import RunRecord

NOTIFY_TIMEOUT_SECONDS = 30.0
NOTIFY_ON = ("end", "failure")  # every final status | failed and lost only
FAILURES = frozenset({RunStatus.FAILED, RunStatus.LOST})
ENDINGS = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.LOST})
RUN_JSON_KEY = "notify"  # {"command": [...], "on": "end"|"failure"} in run.json
CLAIMS_KEY = "notified"  # the endings already told, in run.json


def wants(on: str, status: str) -> bool:
    """Whether a run ending with ``status`` is told under ``notify_on = on``."""
    if status not in ENDINGS:
        return False
    return status in FAILURES if on == "failure" else True


def notify_env(rec: RunRecord) -> dict[str, str]:
    """The run's facts as the notify command's environment variables (all strings; "" when unknown)."""

    def num(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else ""

    seconds = (rec.ended_t - rec.started_t) if rec.ended_t and rec.started_t else None
    best_epoch = str(rec.best_epoch + 1) if rec.best_epoch is not None else ""  # 1-based, as shown
    return {
        "MDTUI_RUN_ID": rec.run_id,
        "MDTUI_EXPERIMENT": rec.experiment,
        "MDTUI_GROUP": rec.group,
        "MDTUI_STATUS": str(rec.status),
        "MDTUI_REASON": rec.error or "",
        "MDTUI_BEST_ACC1": num(rec.best_acc1),
        "MDTUI_BEST_EPOCH": best_epoch,
        "MDTUI_LAST_ACC1": num(rec.last_acc1),
        "MDTUI_EPOCHS_DONE": str(rec.epochs_done),
        "MDTUI_TOTAL_EPOCHS": str(rec.total_epochs) if rec.total_epochs is not None else "",
        "MDTUI_SECONDS": f"{seconds:.0f}" if seconds is not None else "",
        "MDTUI_EXIT_CODE": str(rec.exit_code) if rec.exit_code is not None else "",
        "MDTUI_RUN_DIR": str(rec.run_dir),
        "MDTUI_HOST": socket.gethostname(),
        "MDTUI_MESSAGE": message(rec),
    }


def message(rec: RunRecord) -> str:
    """One line for a phone or a mail subject: what ended, how, and its best accuracy."""
    text = f"mdtui: {rec.experiment} ({rec.run_id}) {rec.status}"
    if rec.best_acc1 is not None:
        text += f", best acc1 {rec.best_acc1:.2f}%"
        if rec.best_epoch is not None:
            text += f" at epoch {rec.best_epoch + 1}"
    if rec.error and rec.status != RunStatus.COMPLETED:
        text += f": {rec.error.splitlines()[0][:200]}"
    return text


def claim(run_dir: Path, key: str) -> bool:
    """Mark ending ``key`` as told in run.json; False when it already was (or the folder is gone).

    Read-check-write under the run's lock: of two settles of one ending, one claims it."""
    if not run_dir.is_dir():  # a folder deleted by hand stays deleted (file_lock would create it)
        return False
    with file_lock(run_dir / ".run.lock"):
        data = read_json(run_dir / "run.json")
        if not isinstance(data, dict):
            return False
        told = data.get(CLAIMS_KEY) if isinstance(data.get(CLAIMS_KEY), list) else []
        if key in told:
            return False
        data[CLAIMS_KEY] = [*told, key]
        atomic_write_json(run_dir / "run.json", data)
    return True


def notify_ended(rec: RunRecord) -> bool:
    """Start the notify command for this final ending of a run, if it has one that wants it and nobody has
    started it yet; True when started. Never raises: the ending is already written."""
    try:
        run_dir = Path(rec.run_dir)
        setting = (read_json(run_dir / "run.json") or {}).get(RUN_JSON_KEY)
        if not isinstance(setting, dict) or not setting.get("command"):
            return False
        if not wants(str(setting.get("on", "end")), str(rec.status)):
            return False
        if not claim(run_dir, f"{rec.started_t or rec.created_t}:{rec.status}"):
            return False
        start_helper([str(a) for a in setting["command"]], notify_env(rec), run_dir)
        return True
    except Exception as exc:  # noqa: BLE001 -- a notification must never break an ending
        print(f"mdtui: notify: not started for {rec.run_id}: {exc}", file=sys.stderr)
        return False


def start_helper(command: list[str], env: dict[str, str], run_dir: Path) -> subprocess.Popen[bytes]:
    """The detached helper that runs ``command`` under the time limit (``main`` below)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mdtui.execution.notify", str(run_dir), str(NOTIFY_TIMEOUT_SECONDS), *command],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # neither a supervisor's exit nor a terminal's ^C reaches it
        close_fds=True,
    )


def run_command(command: list[str], timeout: float, log: Path) -> int | None:
    """Run ``command`` (its stderr goes to ``log``, the run's stderr.log); a failure is one line there.
    Returns its exit code, None when it could not start or ran out of time."""

    def complain(what: str) -> None:
        with contextlib.suppress(OSError):
            if log.parent.is_dir():
                append_line(log, f"mdtui: notify: {what}")

    shown = " ".join(command)
    try:
        with open(log, "ab") as err:  # its complaints beside the run's own
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its own group: the time limit kills all it started
            )
    except OSError as exc:
        complain(f"could not start `{shown}`: {exc}")
        return None
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        complain(f"`{shown}` killed after the {timeout:g} s time limit")
        return None
    if code != 0:
        complain(f"`{shown}` exited with code {code}")
    return code


def main(argv: list[str]) -> int:
    """``python -m mdtui.execution.notify RUN_DIR TIMEOUT CMD...``: the detached helper."""
    run_dir, timeout, command = Path(argv[0]), float(argv[1]), argv[2:]
    if not run_dir.is_dir():  # deleted meanwhile: nothing to log into, and nothing to re-create
        return 0
    code = run_command(command, timeout, run_dir / "stderr.log")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
