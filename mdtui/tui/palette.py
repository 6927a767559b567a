"""Command-palette entries for experiments and runs, whose names are user text (never markup).

Textual's own system-command provider reads every title as markup, so a sweep point such as
``kft-cbs-refl[optim.lr=1e-05]`` crashed the palette. These hits carry ready-made ``Content``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from mdtui.tui.messages import OpenRunRequested, RunRequested
from mdtui.tui.text import markup_escape, visible

MAX_EXPERIMENTS = 500
MAX_RUNS = 100


class ExperimentCommands(Provider):
    """ "Run <experiment>" for every experiment and "Open run <id>" for recent runs."""

    def _entries(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app: Any = self.app
        entries = []
        plan = getattr(app.dashboard, "plan", None)
        if plan is not None:
            for exp in list(plan.experiments.values())[:MAX_EXPERIMENTS]:
                message = RunRequested([exp.name])
                entries.append(
                    (f"Run {exp.name}", f"{exp.group}: run now", partial(app.post_message, message))
                )
        for row in app.snapshot.runs[:MAX_RUNS]:
            message = OpenRunRequested(row.run_id)
            entries.append(
                (
                    f"Open run {row.run_id}",
                    f"{row.experiment} ({row.status})",
                    partial(app.post_message, message),
                )
            )
        return entries

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            yield DiscoveryHit(Content(visible(title)), callback, text=title, help=markup_escape(help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            shown = visible(title)
            score, offsets = matcher.fuzzy_search.match(matcher.query, shown)
            if score <= 0:
                continue
            content = Content(shown)
            for offset in offsets:
                content = content.stylize(matcher.match_style, offset, offset + 1)
            yield Hit(score, content, callback, text=title, help=markup_escape(help_text))
