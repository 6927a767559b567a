"""Facts about processes and the environment a run is recorded with (run.json, docs/results.md).

A pid alone never identifies a process: pids are reused. A process is "the one we recorded" only when
its psutil create time matches too, on the same boot (the boot id), so a reused pid or a reboot
never passes for a run's process.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "mdtui",
    "torch",
    "torchvision",
    "numpy",
    "textual",
    "typer",
    "psutil",
    "nvidia-ml-py",
    "scikit-learn",
)


def boot_id() -> str | None:
    """The kernel's boot id: a pid recorded on another boot is never ours."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_start_time(pid: int) -> float | None:
    """psutil create_time of ``pid``, or None when it does not exist (or is a zombie)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.Error, OSError):
        return None


def group_has_live_member(pgid: int) -> bool:
    """Does a process other than a zombie still belong to process group ``pgid``?

    A group whose members have all exited but are not yet reaped still answers ``killpg(pgid, 0)``;
    nothing in it can use a device any more, so it does not count.
    """
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (psutil.Error, OSError):
            continue
    return False


def process_alive(pid: int | None, start: float | None, boot: str | None = None) -> bool:
    """True when ``pid`` runs and is the very process recorded (same start time and boot)."""
    if not pid or start is None:
        return False
    if boot and boot_id() not in (None, boot):
        return False
    now_start = process_start_time(pid)
    return now_start is not None and abs(now_start - start) < 0.05


def git_info(directory: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git work tree holding ``directory``, or None outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            stdin=subprocess.DEVNULL,
        )
        if head.returncode != 0:
            return None
        # tracked changes only: an untracked scratch file does not change what ran
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {
        "commit": head.stdout.strip(),
        "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None,
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (never imports torch)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def user_name() -> str | None:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER")


LOGIND_CONFS = (Path("/etc/systemd/logind.conf"), Path("/etc/systemd/logind.conf.d"))
LINGER_DIR = Path("/var/lib/systemd/linger")


def logout_kills_processes(
    confs: tuple[Path, ...] = LOGIND_CONFS, linger_dir: Path = LINGER_DIR, user: str | None = None
) -> bool:
    """True when systemd-logind will kill this user's processes at logout, detached runs included.

    With ``KillUserProcesses=yes`` even setsid'd processes die with the SSH session unless the user
    lingers (`loginctl enable-linger`, docs/cli.md). The last setting read wins, as in logind.
    """
    kill = False
    files: list[Path] = []
    for conf in confs:
        files += sorted(conf.glob("*.conf")) if conf.is_dir() else [conf] if conf.is_file() else []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.strip().partition("=")
            if key.strip() == "KillUserProcesses":
                kill = value.strip().lower() in ("yes", "true", "1", "on")
    user = user or user_name()
    return kill and not (user is not None and (linger_dir / user).exists())


LOGOUT_WARNING = (
    "warning: systemd-logind is set to kill your processes at logout (KillUserProcesses=yes), "
    "detached runs included; run `loginctl enable-linger` once so they survive your SSH session"
)
