"""Checking a TOML table key by key against a table of checks (``[settings]``, ``slurm = {...}``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.schema.validate import suggest

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


# `on_lost` in [settings] and `retries = { lost = N, failed = M }` per experiment (mdtui.scheduling.retry)
ON_LOST = ("keep", "resume")
RESUME_RETRIES = 3  # on_lost = "resume": lost runs are resumed up to this many times, unless `retries` says
RETRY_STATUSES = ("lost", "failed")


def retries_problem(value: Any) -> str | None:
    """What is wrong with ``retries = { lost = 2, failed = 0 }``, or None."""
    example = "e.g. { lost = 2, failed = 0 }"
    if not isinstance(value, dict):
        return f"expected a table of retry counts, {example}, got {value!r}"
    for key, count in value.items():
        if key not in RETRY_STATUSES:
            return f'unknown status "{key}"{suggest(key, RETRY_STATUSES)}; retries can be given for: lost, failed'
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 100:
            return f"{key} = {count!r}: expected a number of retries from 0 to 100"
    return None
