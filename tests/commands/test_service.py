"""``mdtui service install``: the systemd user unit and its enabling, the logind warning, and the
crontab fallback -- without touching this machine's systemd (its commands are recorded, not run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mdtui.cli import app
from mdtui.commands import service

runner = CliRunner()


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """A pretend systemd: units go under tmp_path, system commands are recorded and succeed."""
    calls: list[list[str]] = []
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(service, "systemd_available", lambda: True)
    monkeypatch.setattr(service, "run_command", lambda argv: (calls.append(argv), (0, ""))[1])
    monkeypatch.setattr(service, "user_name", lambda: "alice")
    monkeypatch.setattr(service, "logout_kills_processes", lambda user=None: False)
    return calls


def test_the_unit_starts_the_scheduler_of_this_project_and_never_kills_its_runs(tiny_toml: Path) -> None:
    runs = tiny_toml.parent / "runs"
    text = service.unit_text(runs, tiny_toml)
    assert f"ExecStart={sys.executable} -m mdtui.scheduling.scheduler {runs} {tiny_toml}\n" in text
    assert "KillMode=process\n" in text and "WantedBy=default.target\n" in text
    assert f"WorkingDirectory={tiny_toml.parent}\n" in text and "Restart=no\n" in text
    assert service.scheduler_command(runs, tiny_toml)[1:3] == ["-m", "mdtui.scheduling.scheduler"]
    assert service.unit_name(runs) != service.unit_name(runs.parent / "other")  # one unit per runs dir


def test_install_writes_enables_and_lingers(
    tiny_toml: Path, systemd: list[list[str]], tmp_path: Path
) -> None:
    result = runner.invoke(app, ["-f", str(tiny_toml), "service", "install"])
    assert result.exit_code == 0, result.output
    runs = (tiny_toml.parent / "runs").resolve()
    name = service.unit_name(runs)
    unit = tmp_path / "config" / "systemd" / "user" / name
    assert unit.read_text() == service.unit_text(runs, tiny_toml.resolve())
    assert systemd == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", name],
        ["loginctl", "enable-linger", "alice"],
    ]
    assert 'on_lost is "keep"' in result.output  # lost runs would not resume: said
    removed = runner.invoke(app, ["-f", str(tiny_toml), "service", "uninstall"])
    assert removed.exit_code == 0 and not unit.exists()
    assert ["systemctl", "--user", "disable", name] in systemd


def test_install_warns_when_logind_kills_processes_and_fails_clearly(
    tiny_toml: Path, systemd: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "logout_kills_processes", lambda user=None: True)
    result = runner.invoke(app, ["-f", str(tiny_toml), "service", "install"])
    assert result.exit_code == 0 and "KillUserProcesses=yes" in result.output
    monkeypatch.setattr(service, "run_command", lambda argv: (1, "Failed to connect to bus"))
    broken = runner.invoke(app, ["-f", str(tiny_toml), "service", "install"])
    assert broken.exit_code == 1 and "Failed to connect to bus" in broken.output
    assert "Traceback" not in broken.output


def test_without_systemd_it_prints_the_crontab_line(tiny_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "systemd_available", lambda: False)
    monkeypatch.setattr(service, "run_command", lambda argv: pytest.fail(f"ran {argv}"))
    result = runner.invoke(app, ["-f", str(tiny_toml), "service", "install"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("@reboot "))
    runs = (tiny_toml.parent / "runs").resolve()
    assert line == service.crontab_line(runs, tiny_toml.resolve())
    assert "-m mdtui.scheduling.scheduler" in line and line.endswith(f">> {runs / 'scheduler.log'} 2>&1")
