"""Build a ``Plan`` from a parsed experiments.toml: merge, inherit, expand sweeps, resolve ``from``.

Every problem is collected as a ``LocatedIssue`` (file, line, experiment, dotted key, message) and
raised together at the end, so one ``mdtui validate`` shows all of them. The engine part of each
experiment is validated by ``engine.schema.validate.from_dict``, the function the engine itself runs.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Any

from engine.schema import config as engine_cfg
from engine.schema import validate as engine_validate
from engine.schema.catalog import expand_bare_names
from mdtui.registry.checks import RESUME_RETRIES
from mdtui.registry.rules import (
    DEFAULTS_MANAGER_KEYS,
    ENGINE_TOP_KEYS,
    MANAGER_KEYS,
    NOT_INHERITED,
    RESERVED_KEYS,
    SWEEPABLE,
    check_manager_value,
    check_name,
    closest,
    format_value,
    get_dotted,
    merge,
    set_dotted,
)
from mdtui.registry.slurm_options import check_slurm_table
from mdtui.registry.spec import (
    Experiment,
    ExperimentsError,
    LocatedIssue,
    Plan,
    Settings,
    parse_settings,
)
from mdtui.registry.toml_lines import locate_keys

# --------------------------------------------------------------------------- the builder


class PlanBuilder:
    def __init__(
        self,
        path: Path,
        shown: str,
        text: str,
        doc: dict[str, Any],
        env: dict[str, str] | None,
        lines: dict[tuple[str, ...], tuple[int, int]] | None = None,
    ) -> None:
        self.path, self.shown, self.doc, self.env = path, shown, doc, env
        self.lines = locate_keys(text) if lines is None else lines  # key path -> (line, column)
        self.issues: list[LocatedIssue] = []
        self.tables: dict[str, dict[str, Any]] = {}  # raw [experiment.X] tables
        self.engine: dict[str, dict[str, Any]] = {}  # own engine keys per table (known keys only)
        self.manager: dict[str, dict[str, Any]] = {}  # own manager keys per table (valid values only)
        self.broken: set[str] = set()  # tables that produced no experiments (suppress knock-on errors)
        self.names: set[str] = set()  # every expanded name, valid or not
        self.refs: list[tuple[str, str, str, str]] = []  # (table, expanded name, key, target)
        # table -> (engine keys, inheritable manager keys) after [defaults] and its extends chain,
        # memoised so that a chain of n tables costs n merges, not n² (see ``inherited``).
        self.resolved: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.on_cycle: dict[str, list[str]] = {}  # tables on an extends cycle (check_extends)

    # ------------------------------------------------------------------ locating and reporting
    def line_of(self, *paths: tuple[str, ...]) -> tuple[int, int | None]:
        for path in paths:
            for n in range(len(path), 0, -1):
                if path[:n] in self.lines:
                    return self.lines[path[:n]]
        return 0, None

    def report(self, where: tuple[str, ...], experiment: str | None, key: str | None, message: str) -> None:
        line, col = self.line_of(where)
        self.issues.append(LocatedIssue(self.shown, line, col, experiment, key, message))

    def parent(self, table: str) -> str | None:
        parent = self.manager.get(table, {}).get("extends")
        return parent if parent in self.tables else None

    def chain(self, table: str) -> list[str]:
        """``table`` and its ``extends`` ancestors, nearest first (stops at cycles and unknown names)."""
        out, seen = [table], {table}
        while (parent := self.parent(out[-1])) is not None and parent not in seen:
            out.append(parent)
            seen.add(parent)
        return out

    def report_key(self, table: str, experiment: str, key: str, message: str) -> None:
        """Report an engine-key issue at the line where that key is written (sweep, table, parents, defaults)."""
        parts = tuple(p for p in re.sub(r"\[\d+\]", "", key).split(".") if p)
        for skey in self.manager.get(table, {}).get("sweep", {}):
            if key == skey or key.startswith(skey + ".") or key.startswith(skey + "["):
                self.report(("experiment", table, "sweep", skey), experiment, key, message)
                return
        scopes = [("experiment", t) for t in self.chain(table)] + [("defaults",)]
        for n in range(len(parts), 0, -1):
            for scope in scopes:
                if scope + parts[:n] in self.lines:
                    line, col = self.lines[scope + parts[:n]]
                    self.issues.append(LocatedIssue(self.shown, line, col, experiment, key, message))
                    return
        self.report(("experiment", table), experiment, key, message)

    # ------------------------------------------------------------------ stages
    def build(self) -> Plan:
        settings = self.read_settings()
        self.read_top_level()
        defaults_engine, defaults_manager = self.read_defaults()
        self.read_tables()
        self.check_extends()
        experiments: dict[str, Experiment] = {}
        expanded: dict[str, tuple[str, ...]] = {}
        for table in self.tables:
            names = self.expand(table, settings, defaults_engine, defaults_manager, experiments)
            expanded[table] = tuple(names)
        self.resolve_references(experiments, expanded)
        self.check_baselines(experiments)
        if self.issues:
            raise ExperimentsError(sorted(self.deduplicated(), key=lambda i: i.line))
        return Plan(settings=settings, experiments=experiments, tables=expanded)

    def deduplicated(self) -> list[LocatedIssue]:
        """One issue per (line, key, message): an inherited mistake is reported once, where it is written."""
        seen: set[tuple[int, str | None, str]] = set()
        out = []
        for issue in self.issues:
            ident = (issue.line, issue.key, issue.message)
            if ident not in seen:
                seen.add(ident)
                out.append(issue)
        return out

    def read_settings(self) -> Settings:
        settings, problems = parse_settings(self.doc.get("settings"), self.path, self.env)
        for key, message in problems:
            self.report(tuple(key.split(".")), None, key, message)
        return settings

    def read_top_level(self) -> None:
        for key in self.doc:
            if key not in ("settings", "defaults", "experiment"):
                hint = engine_validate.suggest(key, ("settings", "defaults", "experiment"))
                self.report(
                    (key,),
                    None,
                    key,
                    f'unknown top-level key "{key}"{hint}; the file has [settings], [defaults] and '
                    "[experiment.NAME] tables",
                )

    def split_keys(
        self, raw: dict[str, Any], scope: tuple[str, ...], experiment: str | None, allowed_manager
    ):
        """Own keys of one table -> (engine keys, manager keys), reporting unknown/misplaced ones."""
        engine: dict[str, Any] = {}
        manager: dict[str, Any] = {}
        prefix = "defaults." if scope == ("defaults",) else ""
        for key, value in raw.items():
            where = (*scope, key)
            if key in MANAGER_KEYS:
                if key not in allowed_manager:
                    self.report(
                        where,
                        experiment,
                        prefix + key,
                        f'"{key}" cannot be set in [defaults]; set it per experiment',
                    )
                    continue
                problem = check_manager_value(key, value)
                if problem:
                    self.report(where, experiment, prefix + key, problem)
                    continue
                if key == "seed":  # `seed = 3` is `seeds = [3]`; the nearer one wins when inheriting
                    key, value = "seeds", [value]
                    if "seeds" in raw:
                        self.report(
                            where, experiment, prefix + "seed", 'set either "seed" or "seeds", not both'
                        )
                manager[key] = value
            elif key in RESERVED_KEYS:
                self.report(
                    where, experiment, prefix + key, f'"{key}" cannot be set here: {RESERVED_KEYS[key]}'
                )
            elif key in ENGINE_TOP_KEYS:
                engine[key] = value
            else:
                hint = engine_validate.suggest(key, (*ENGINE_TOP_KEYS, *allowed_manager))
                self.report(where, experiment, prefix + key, f'unknown key "{key}"{hint}')
        return expand_bare_names(engine), manager

    def read_defaults(self) -> tuple[dict[str, Any], dict[str, Any]]:
        raw = self.doc.get("defaults", {})
        if not isinstance(raw, dict):
            self.report(("defaults",), None, "defaults", "[defaults] must be a table")
            return {}, {}
        return self.split_keys(raw, ("defaults",), None, DEFAULTS_MANAGER_KEYS)

    def read_tables(self) -> None:
        raw = self.doc.get("experiment", {})
        if not isinstance(raw, dict):
            self.report(("experiment",), None, "experiment", "expected [experiment.NAME] tables")
            return
        for name, table in raw.items():
            where = ("experiment", name)
            if not isinstance(table, dict):
                self.report(where, name, None, f"expected a table [experiment.{name}], got {table!r}")
                continue
            problem = check_name(name)
            if problem is None and ("[" in name or "]" in name):
                problem = "'[' and ']' are reserved for expanded sweep names like NAME[key=value]"
            if problem:
                self.report(where, name, None, f'invalid experiment name "{name}": {problem}')
            self.tables[name] = table
            self.engine[name], self.manager[name] = self.split_keys(table, where, name, MANAGER_KEYS)
            for key in self.manager[name].get("sweep", {}):
                self.check_sweep_key(name, key, self.manager[name]["sweep"][key])

    def check_sweep_key(self, table: str, key: str, values: Any) -> None:
        where = ("experiment", table, "sweep", key)
        if key not in SWEEPABLE:
            if key in MANAGER_KEYS or key in RESERVED_KEYS:
                why = (
                    "use seeds = [...] for one run per seed"
                    if key in ("seed", "seeds")
                    else "only engine keys can be swept"
                )
                self.report(where, table, f"sweep.{key}", f'cannot sweep "{key}": {why}')
            else:
                hint = engine_validate.suggest(key, SWEEPABLE)
                self.report(where, table, f"sweep.{key}", f'sweep key "{key}" is not a config key{hint}')
            self.manager[table]["sweep"] = {k: v for k, v in self.manager[table]["sweep"].items() if k != key}
            self.broken.add(table)
        elif not isinstance(values, list) or not values:
            self.report(where, table, f"sweep.{key}", f"expected a non-empty list of values, got {values!r}")
            self.manager[table]["sweep"] = {k: v for k, v in self.manager[table]["sweep"].items() if k != key}
            self.broken.add(table)

    def extends_cycles(self) -> dict[str, list[str]]:
        """Every table on an ``extends`` cycle -> that cycle in extends order. Each table is walked
        once (a chain of 1,000 tables is 1,000 steps, not a million)."""
        state: dict[str, int] = {}  # 1: on the walk in progress, 2: done
        out: dict[str, list[str]] = {}
        for start in self.tables:
            walk: list[str] = []
            node: str | None = start
            while node is not None and node not in state:
                state[node] = 1
                walk.append(node)
                node = self.parent(node)
            if node is not None and state[node] == 1:  # came back onto this walk: a cycle
                cycle = walk[walk.index(node) :]
                out.update(dict.fromkeys(cycle, cycle))
            state.update(dict.fromkeys(walk, 2))
        return out

    def check_extends(self) -> None:
        reported_cycles: set[frozenset[str]] = set()
        on_cycle = self.on_cycle = self.extends_cycles()
        for table, manager in self.manager.items():
            parent = manager.get("extends")
            if parent is None:
                continue
            where = ("experiment", table, "extends")
            if parent not in self.tables:
                near = closest(parent, self.tables)
                hint = f"; closest: {', '.join(near)}" if near else ""
                self.report(
                    where,
                    table,
                    "extends",
                    f'extends "{parent}", which is not an [experiment.NAME] table{hint}',
                )
                continue
            if table in on_cycle and frozenset(on_cycle[table]) not in reported_cycles:
                path = on_cycle[table]
                reported_cycles.add(frozenset(path))
                start = path.index(table)  # the cycle as seen from this table
                cycle = " -> ".join([*path[start:], *path[:start], table])
                self.report(where, table, "extends", f"extends cycle: {cycle}")

    def inherited(self, table: str, defaults_engine: dict[str, Any], defaults_manager: dict[str, Any]):
        """(engine dict, manager dict) of ``table`` after [defaults] and its extends chain.

        Each ancestor is resolved once and kept, walking up only to the nearest one already resolved
        (iteratively: a chain of 1,000 tables must not recurse 1,000 deep).
        """
        pending: list[str] = []
        node: str | None = table
        while node is not None and node not in self.resolved:
            if node in self.on_cycle:  # reported by check_extends; resolved as far as the cycle allows
                return self.merge_chain(self.chain(table), defaults_engine, defaults_manager)
            pending.append(node)
            node = self.parent(node)
        for name in reversed(pending):
            parent = self.parent(name)
            engine, manager = self.resolved[parent] if parent else (defaults_engine, defaults_manager)
            own = self.manager[name]
            self.resolved[name] = (
                merge(engine, self.engine[name]),
                {**manager, **{k: v for k, v in own.items() if k not in NOT_INHERITED}},
            )
        engine, manager = self.resolved[table]
        return engine, {**manager, **self.manager[table]}  # a table's own baseline/sweep/description

    def merge_chain(
        self, chain: list[str], defaults_engine: dict[str, Any], defaults_manager: dict[str, Any]
    ):
        engine = copy.deepcopy(defaults_engine)
        manager = dict(defaults_manager)
        for name in reversed(chain):
            engine = merge(engine, self.engine[name])
            for key, value in self.manager[name].items():
                if name == chain[0] or key not in NOT_INHERITED:
                    manager[key] = value
        return engine, manager

    def expand(self, table, settings, defaults_engine, defaults_manager, experiments) -> list[str]:
        written, manager = self.inherited(table, defaults_engine, defaults_manager)
        sweep: dict[str, list[Any]] = manager.get("sweep", {})
        count = math.prod(len(v) for v in sweep.values()) if sweep else 1
        if count > settings.sweep_limit:
            self.report(
                ("experiment", table, "sweep"),
                table,
                "sweep",
                f"expands to {count} experiments, more than settings.sweep_limit = {settings.sweep_limit}; "
                "shrink the sweep or raise sweep_limit in [settings]",
            )
            self.broken.add(table)
            return []
        header_line = self.line_of(("experiment", table))[0]
        keys = list(sweep)
        points = [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep[k] for k in keys))
        ]
        names: list[str] = []
        for point in points:
            name = (
                table
                if not point
                else table + "[" + ",".join(f"{k}={format_value(v)}" for k, v in point.items()) + "]"
            )
            if point and (problem := check_name(name)):
                self.report(
                    ("experiment", table, "sweep"), table, "sweep", f'expanded name "{name}": {problem}'
                )
                continue
            if name in experiments:
                other = experiments[name]
                self.report(
                    ("experiment", table),
                    table,
                    "sweep" if point else None,
                    f'expanded name "{name}" is already defined by [experiment.{other.table}] (line {other.line}); '
                    "experiment names must be unique",
                )
                continue
            exp = self.make_experiment(table, name, point, written, manager, settings, header_line)
            if exp is not None:
                experiments[name] = exp
                names.append(name)
        complete = len(names) == len(points)
        if complete and sweep and manager.get("baseline") and not any(experiments[n].baseline for n in names):
            own = ", ".join(f"{k} = {format_value(get_dotted(written, k))}" for k in keys)
            self.report(
                ("experiment", table, "baseline"),
                table,
                "baseline",
                f"baseline = true on a sweep marks the point whose swept values equal the table's own ({own}); "
                "none does: set those keys to one of the swept values",
            )
        if not complete:
            self.broken.add(table)
        return names

    def make_experiment(
        self, table, name, point, written, manager, settings, header_line
    ) -> Experiment | None:
        engine = copy.deepcopy(written)
        for key, value in point.items():
            if not set_dotted(engine, key, value):
                self.report_key(table, name, key, f"cannot set {key}: a part of it is not a table")
                return None
        self.names.add(name)
        for key, target in (
            ("from", manager.get("from")),
            ("doctor.mask.combine_with", get_dotted(engine, "doctor.mask.combine_with")),
        ):
            if isinstance(target, str):
                self.refs.append((table, name, key, target))
        runnable = engine  # from_dict only reads it
        root = get_dotted(engine, "data.root")
        if isinstance(root, str) and root:  # relative to the experiments file, whoever runs it
            root = str(engine_cfg.resolve_data_root(root, settings.path.parent))
            runnable = {**engine, "data": {**engine["data"], "root": root}}
        try:
            cfg = engine_validate.from_dict(runnable)
        except engine_validate.ConfigError as exc:
            seen: set[str] = set()
            for issue in exc.issues:
                if issue.key not in seen:  # a wrong type is also "out of range" once coerced: say it once
                    seen.add(issue.key)
                    self.report_key(table, name, issue.key, issue.message)
            return None
        gpus, nodes = manager.get("gpus", 1), manager.get("nodes", 1)
        if cfg.kernels is not None and self.ranks(cfg, gpus, nodes) > 1:
            self.report_key(
                table,
                name,
                "kernels",
                f"{engine_validate.KERNELS_ONE_PROCESS}: this experiment gets {gpus} GPU(s) on {nodes} "
                "node(s), a process each; set gpus = 1 and nodes = 1",
            )
            return None
        resolved = engine_cfg.to_dict(cfg)
        for key in ("run_id", "seed", "init_checkpoint", "cache_dir"):
            resolved.pop(key, None)
        resolved["experiment"] = name
        is_baseline = bool(manager.get("baseline")) and all(
            get_dotted(written, k) == v and type(get_dotted(written, k)) is type(v) for k, v in point.items()
        )
        return Experiment(
            name=name,
            table=table,
            group=manager.get("group", table),
            baseline=is_baseline,
            tags=tuple(manager.get("tags", ())),
            description=manager.get("description", ""),
            upstream=manager.get("from"),
            seeds=tuple(manager.get("seeds", (0,))),
            sweep_point=dict(point),
            config=resolved,
            line=header_line,
            gpus=gpus,
            nodes=nodes,
            slurm=check_slurm_table(manager.get("slurm", {}), "slurm")[0],  # values as sbatch takes them
            written=engine,
            paper=dict(manager.get("paper", {})),
            notify=tuple(manager.get("notify", settings.notify)),
            notify_on=manager.get("notify_on", settings.notify_on),
            retries={
                "lost": RESUME_RETRIES if settings.on_lost == "resume" else 0,
                "failed": 0,
                **manager.get("retries", {}),
            },
        )

    @staticmethod
    def ranks(cfg: Any, gpus: object, nodes: object) -> int:
        """How many processes a run of ``cfg`` gets from ``gpus`` / ``nodes`` (one per GPU per node
        unless distributed.processes says; 1 when that is > 1, which is the engine's own check, or
        when gpus/nodes are invalid, which their own rules report)."""
        if cfg.distributed.processes > 1 or not (isinstance(gpus, int) and isinstance(nodes, int)):
            return 1
        return (cfg.distributed.processes or gpus) * nodes

    # ------------------------------------------------------------------ references between experiments
    def resolve_references(
        self, experiments: dict[str, Experiment], expanded: dict[str, tuple[str, ...]]
    ) -> None:
        """Check ``from`` and ``doctor.mask.combine_with`` targets, then cycles through them."""
        edges: dict[str, list[tuple[str, str]]] = {}
        for table, name, key, target in self.refs:
            if target in self.names:
                edges.setdefault(name, []).append((key, target))
                continue
            if target.split("[")[0] in self.broken:
                continue  # its own error was reported; do not pile up knock-on errors
            if len(expanded.get(target, ())) > 1:
                message = (
                    f'"{target}" is a sweep of {len(expanded[target])} experiments; name one of them: '
                    + ", ".join(expanded[target])
                )
            else:
                near = closest(target, self.names, n=3)
                hint = f"; closest: {', '.join(near)}" if near else ""
                message = f'"{target}" is not an experiment of this file{hint}'
            self.report_key(table, name, key, message)
        self.report_cycles(edges)

    def report_cycles(self, edges: dict[str, list[tuple[str, str]]]) -> None:
        tables = {name: table for table, name, _key, _target in self.refs}
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        reported: set[frozenset[str]] = set()

        def visit(node: str, path: list[str]) -> None:
            state[node] = 1
            for key, nxt in edges.get(node, []):
                if state.get(nxt) == 1:
                    cycle = [*path, node][[*path, node].index(nxt) :]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        text = " -> ".join([*cycle, nxt])
                        self.report_key(
                            tables[node], node, key, f"{key} cycle: {text} (each would wait for the next)"
                        )
                elif state.get(nxt) is None:
                    visit(nxt, [*path, node])
            state[node] = 2

        for name in list(edges):
            if state.get(name) is None:
                visit(name, [])

    def check_baselines(self, experiments: dict[str, Experiment]) -> None:
        first: dict[str, Experiment] = {}
        for exp in experiments.values():
            if not exp.baseline:
                continue
            if exp.group in first:
                other = first[exp.group]
                self.report(
                    ("experiment", exp.table, "baseline"),
                    exp.name,
                    "baseline",
                    f'group "{exp.group}" already has baseline "{other.name}" (line {other.line}); '
                    "a group has at most one baseline = true",
                )
            else:
                first[exp.group] = exp
