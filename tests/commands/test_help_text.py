"""Every `-h` shows its brackets: Typer renders help as Rich markup, where `[settings]` or
`mdtui[tensorboard]` is a style tag and vanishes unless escaped (`\\[`). Issue #19 found one such
("default:  launcher"); this walks every command so that none comes back."""

from __future__ import annotations

import re

import click
import typer
from typer.testing import CliRunner

from mdtui.cli import app

BRACKETED = re.compile(r"\\?\[([^\]\s\[]+)\]")


def commands(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, group)]
    for name, sub in getattr(group, "commands", {}).items():
        found += commands(sub, (*path, name))
    return found


def bracketed(command: click.Command) -> set[str]:
    """The `[...]` words its help texts write (escaped or not): what a reader must see."""
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    return {f"[{m.group(1)}]" for text in texts for m in BRACKETED.finditer(text)}


def test_every_help_shows_the_brackets_it_writes() -> None:
    runner = CliRunner()
    checked = 0
    for path, command in commands(typer.main.get_command(app)):
        wanted = bracketed(command)
        if not wanted:
            continue
        shown = runner.invoke(app, [*path, "-h"], env={"COLUMNS": "400"}).output
        missing = [w for w in wanted if w not in shown]
        assert not missing, (" ".join(path) or "mdtui", missing)
        checked += 1
    assert checked >= 2  # run's --launcher and export's extra, at least
