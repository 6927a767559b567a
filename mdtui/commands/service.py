"""``mdtui service install``: start the scheduler at boot, so lost runs resume and the queue goes on
after a reboot (``[settings] on_lost = "resume"``, mdtui.scheduling.retry).

With systemd: a user unit ``mdtui-<id>.service`` in ``~/.config/systemd/user/`` that runs the scheduler
of this runs directory once at boot (it exits when the queue is drained, as it always does), enabled
with ``systemctl --user enable``, and lingering turned on (``loginctl enable-linger``) so the user's
units start at boot without a login and survive the last logout. ``KillMode=process``: the runs the
scheduler starts are not the unit's to stop; stopping or restarting the unit never kills them.

Without systemd (a container, another init): the ``@reboot`` line for ``crontab -e`` is printed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from mdtui.commands.common import console, err_console, fail, load_plan_or_exit, plan_file
from mdtui.scheduling.scheduler import LOG_NAME
from mdtui.system.processes import LOGOUT_WARNING, logout_kills_processes, user_name

service_app = typer.Typer(help="Start the scheduler at boot (systemd user unit, or a crontab @reboot line).")


def unit_name(runs_dir: Path) -> str:
    """One unit per runs directory: ``mdtui-<8 hex of its path>.service``."""
    return f"mdtui-{hashlib.sha1(str(runs_dir).encode()).hexdigest()[:8]}.service"


def scheduler_command(runs_dir: Path, experiments: Path) -> list[str]:
    """How the unit (and the crontab line) starts the scheduler: the same process ``ensure_scheduler``
    starts, in the foreground."""
    return [sys.executable, "-m", "mdtui.scheduling.scheduler", str(runs_dir), str(experiments)]


def unit_text(runs_dir: Path, experiments: Path) -> str:
    command = " ".join(shlex.quote(a) for a in scheduler_command(runs_dir, experiments))
    return (
        "[Unit]\n"
        f"Description=mdtui scheduler for {experiments} (resumes lost runs and the queue at boot)\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"WorkingDirectory={experiments.parent}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        f"ExecStart={command}\n"
        "# the runs it starts are not the unit's: stopping or re-running the unit never kills them\n"
        "KillMode=process\n"
        "Restart=no\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def crontab_line(runs_dir: Path, experiments: Path) -> str:
    command = " ".join(shlex.quote(a) for a in scheduler_command(runs_dir, experiments))
    log = shlex.quote(str(runs_dir / LOG_NAME))
    return f"@reboot cd {shlex.quote(str(experiments.parent))} && {command} >> {log} 2>&1"


def unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def systemd_available() -> bool:
    """A running systemd (the init of this machine) and its ``systemctl``."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def run_command(argv: list[str]) -> tuple[int, str]:
    """Run a system command; (exit code, its output)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


@service_app.command("install")
def install_cmd(
    ctx: typer.Context,
    print_only: bool = typer.Option(
        False, "--print", help="Print the unit (or crontab line); change nothing."
    ),
) -> None:
    """Write and enable a systemd user unit that starts this project's scheduler at boot (with
    lingering); where systemd is absent, print the crontab @reboot line to add instead."""
    plan = load_plan_or_exit(plan_file(ctx))
    runs_dir, experiments = plan.settings.runs_dir.resolve(), plan.settings.path.resolve()
    if plan.settings.on_lost != "resume":
        console.print(
            'note: [settings] on_lost is "keep": at boot the queue goes on, but lost runs wait for '
            '`mdtui run --resume`; set on_lost = "resume" to resume them',
            style="yellow",
            soft_wrap=True,
        )
    if not systemd_available():
        console.print("systemd is not running here; add this line with `crontab -e` instead:", soft_wrap=True)
        console.print(crontab_line(runs_dir, experiments), soft_wrap=True, highlight=False)
        return
    name, text = unit_name(runs_dir), unit_text(runs_dir, experiments)
    if print_only:
        console.print(f"# {unit_dir() / name}", highlight=False)
        console.print(text, highlight=False, soft_wrap=True, end="")
        return
    path = unit_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    console.print(f"wrote {path}", highlight=False)
    for argv in (["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", name]):
        code, said = run_command(argv)
        if code != 0:
            fail(f"`{' '.join(argv)}` failed ({code}): {said}")
    console.print(f"enabled {name}: the scheduler starts at every boot", highlight=False)
    user = user_name() or ""
    code, said = run_command(["loginctl", "enable-linger", user]) if user else (1, "unknown user name")
    if code != 0:
        err_console.print(
            f"warning: `loginctl enable-linger` failed ({said}); without lingering the unit starts only "
            f"when you log in. Ask an administrator to run `loginctl enable-linger {user or 'USER'}`",
            soft_wrap=True,
        )
    elif logout_kills_processes(user=user):
        err_console.print(LOGOUT_WARNING, soft_wrap=True)  # lingering did not take (yet)


@service_app.command("uninstall")
def uninstall_cmd(ctx: typer.Context) -> None:
    """Disable and delete this project's unit (runs and the queue are not touched)."""
    plan = load_plan_or_exit(plan_file(ctx))
    name = unit_name(plan.settings.runs_dir.resolve())
    path = unit_dir() / name
    if not path.exists():
        console.print(f"no unit {path}; nothing to do", highlight=False)
        return
    if systemd_available():
        run_command(["systemctl", "--user", "disable", name])
    path.unlink()
    if systemd_available():
        run_command(["systemctl", "--user", "daemon-reload"])
    console.print(f"removed {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")
