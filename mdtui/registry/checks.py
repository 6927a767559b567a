"""Checking a TOML table key by key against a table of checks (``[settings]``, ``slurm = {...}``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.schema.config import suggest

# key -> (check, what is expected): a check returns the value to keep, or None when it is not valid
Checks = Mapping[str, tuple[Callable[[Any], Any], str]]


def check_table(
    table: Mapping[str, Any], checks: Checks, prefix: str, kind: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(kept values, [(dotted key, message)]): unknown keys get a suggestion, bad values what is expected.
    ``kind`` names the keys in messages ("setting", "Slurm option")."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, raw in table.items():
        if key not in checks:
            problems.append(
                (
                    f"{prefix}.{key}",
                    f'unknown {kind} "{key}"{suggest(key, checks)}; valid: {", ".join(checks)}',
                )
            )
            continue
        check, expected = checks[key]
        value = check(raw)
        if value is None:
            problems.append((f"{prefix}.{key}", f"expected {expected}, got {raw!r}"))
            continue
        values[key] = value
    return values, problems


# `notify`: in [settings] and per experiment (mdtui.execution.notify runs it)
NOTIFY_ON = ("end", "failure")
NOTIFY_EXPECTED = 'a command as a list of strings, e.g. ["notify-send", "mdtui"] or ["sh", "-c", "..."]'


def notify_command_problem(value: Any) -> str | None:
    """What is wrong with a ``notify`` command (a list of strings, a non-empty program), or None.
    An empty list is valid: an experiment's ``notify = []`` turns the setting's command off."""
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        return f"expected {NOTIFY_EXPECTED}, got {value!r}"
    if value and not value[0].strip():
        return f"the command's program (its first item) is empty: {value!r}"
    return None
