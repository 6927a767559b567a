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

from mdtui.tui.messages import RESUMABLE, OpenRunRequested, QueueRequested, ResumeRequested, RunRequested
from mdtui.tui.text import markup_escape, visible

MAX_EXPERIMENTS = 500
MAX_RUNS = 100


class ExperimentCommands(Provider):
    """Run or queue an experiment or a whole group; open recent runs; resume the resumable ones.

    A query of several words matches an entry whose title or description holds each word (fuzzily,
    in any order): ``lt10 mislas`` finds the group ``lt10``'s experiment ``…mislas…``.
    """

    def _entries(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app: Any = self.app
        entries = []
        plan = getattr(app.dashboard, "plan", None)
        post = app.post_message
        if plan is not None:
            groups: dict[str, list[str]] = {}
            for exp in list(plan.experiments.values())[:MAX_EXPERIMENTS]:
                groups.setdefault(exp.group, []).append(exp.name)
                entries.append(
                    (
                        f"Run {exp.name}",
                        f"group {exp.group}: run now",
                        partial(post, RunRequested([exp.name])),
                    )
                )
                entries.append(
                    (
                        f"Queue {exp.name}",
                        f"group {exp.group}: add to the queue",
                        partial(post, QueueRequested([exp.name])),
                    )
                )
            for group, names in groups.items():
                if not group:
                    continue
                count = f"{len(names)} experiment{'s' if len(names) != 1 else ''}"
                entries.append(
                    (f"Run group {group}", f"{count}: run now", partial(post, RunRequested(names)))
                )
                entries.append(
                    (
                        f"Queue group {group}",
                        f"{count}: add to the queue",
                        partial(post, QueueRequested(names)),
                    )
                )
        for row in app.snapshot.runs[:MAX_RUNS]:
            about = f"{row.experiment} ({row.status})"
            entries.append((f"Open run {row.run_id}", about, partial(post, OpenRunRequested(row.run_id))))
            if row.status in RESUMABLE:
                entries.append(
                    (
                        f"Resume run {row.run_id}",
                        f"{about}: from its last.pt",
                        partial(post, ResumeRequested([row.run_id])),
                    )
                )
        return entries

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            yield DiscoveryHit(Content(visible(title)), callback, text=title, help=markup_escape(help_text))

    async def search(self, query: str) -> Hits:
        words = query.split()
        if not words:
            return
        matchers = [self.matcher(word) for word in words]
        for title, help_text, callback in self._entries():
            shown = visible(title)
            about = visible(help_text)
            score, offsets = 0.0, set()
            for matcher in matchers:
                in_title, where = matcher.fuzzy_search.match(matcher.query, shown)
                in_about, _ = matcher.fuzzy_search.match(matcher.query, about)
                if in_title <= 0 and in_about <= 0:
                    break  # every word must be somewhere
                score += max(in_title, in_about * 0.5)  # a hit in the title counts more
                if in_title > 0:
                    offsets.update(where)
            else:
                content = Content(shown)
                for offset in sorted(offsets):
                    content = content.stylize(matchers[0].match_style, offset, offset + 1)
                yield Hit(score / len(matchers), content, callback, text=title, help=markup_escape(help_text))
