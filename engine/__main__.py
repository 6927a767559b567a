"""Command line of the engine.

    python -m engine RUN_DIR [--resume]     train the run described by RUN_DIR/config.json
    python -m engine bench [...]             throughput and loop-overhead figures as JSON
    python -m engine layers MODEL [...]      addressable layers of a model with output shapes

Exit codes of a run: 0 after run_finished{completed|stopped}, 1 after run_finished{failed}, 2 for an
invalid config. The run's stdout carries events only: anything else printed goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def _events_only_stdout() -> TextIO:
    """Keep a private handle on the real stdout for events; send fd 1 (and sys.stdout) to stderr,
    so stray prints of libraries, even from C, cannot corrupt the event stream."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return real


def _rank() -> int:
    """This process's rank under torchrun (0 when it was not started by torchrun)."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def _arm_parent_death_signal() -> None:
    """SIGTERM this process when its parent dies (Linux). torchrun starts every rank in a session of
    its own, so a stop sent to the supervisor's process group never reaches the ranks: if torchrun is
    killed, the ranks still stop gracefully."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _rank_output_to_file(run_dir: Path, rank: int) -> None:
    """Rank k > 0 writes no events: its fds 1 and 2 go to RUN_DIR/stderr.rank{k}.log (a traceback
    of a failing rank lands there; rank 0's stderr is the supervisor's stderr.log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(run_dir / f"stderr.rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT: finish the current step, save last.pt, emit run_finished{stopped}, exit 0.
    A second SIGINT interrupts at once (a user pressing Ctrl-C twice).

    mdtui's supervisor starts the engine with the parent-death signal set to SIGTERM, so the same
    graceful stop happens when the supervisor dies; stderr.log then says why."""
    parent = os.getppid()

    def on_term(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        if not stop.is_set() and parent > 1 and os.getppid() != parent:
            # os.write, not print: a handler may run in the middle of another write to stderr
            os.write(2, f"engine: its parent (pid {parent}) is gone: stopping, last.pt is saved\n".encode())
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


def run_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Train the run in RUN_DIR.")
    parser.add_argument("run_dir", type=Path, help="run directory holding config.json")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir.resolve()
    rank = _rank()
    if "WORLD_SIZE" in os.environ:
        _arm_parent_death_signal()
    stop = threading.Event()
    _install_stop_handlers(stop)
    if rank > 0 and run_dir.is_dir():
        _rank_output_to_file(run_dir, rank)
    stdout = _events_only_stdout()

    from engine.schema.validate import ConfigError, from_dict
    from engine.sinks import EventSink

    config_path = run_dir / "config.json"
    run_id = run_dir.name
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("the top level is not a JSON object")
        run_id = str(raw.get("run_id") or run_id)
        cfg = from_dict(raw)
    except (OSError, ValueError) as exc:
        message = (
            "\n".join(f"  {i.key}: {i.message}" if i.key else f"  {i.message}" for i in exc.issues)
            if isinstance(exc, ConfigError)
            else f"  {exc}"
        )
        error = f"invalid config {config_path}:\n{message}"
        print(error, file=sys.stderr)
        if run_dir.is_dir() and rank == 0:
            sink = EventSink(run_id, run_dir / "events.jsonl", stream=stdout)
            sink.emit("run_finished", status="failed", summary={"epochs_done": 0}, error=error)
            sink.close()
        return EXIT_BAD_CONFIG
    if args.resume and not (run_dir / "checkpoints" / "last.pt").is_file():
        error = f"cannot resume: {run_dir / 'checkpoints' / 'last.pt'} does not exist"
        print(error, file=sys.stderr)
        if rank > 0:
            return EXIT_FAILED
        sink = EventSink(run_id, run_dir / "events.jsonl", stream=stdout)  # every ending is an event
        sink.emit("run_finished", status="failed", summary={"epochs_done": 0}, error=error)
        sink.close()
        return EXIT_FAILED

    from engine.sinks import NullSink
    from engine.train import run

    if rank > 0:  # rank 0 writes the run's events for every rank
        sink: EventSink = NullSink()
    else:
        sink = EventSink(
            run_id, run_dir / "events.jsonl", stream=stdout, step_events_per_second=cfg.step_events_per_second
        )
    try:
        status = run(cfg, run_dir, sink, resume=args.resume, stop=stop)
    except OSError as exc:  # the event log itself cannot be written (a full disk): say so on stderr
        where = exc.filename or run_dir / "events.jsonl"
        print(f"cannot write {where}: {exc.strerror or exc} (is the disk full?)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        with contextlib.suppress(OSError):
            sink.close()
    return EXIT_OK if status in ("completed", "stopped") else EXIT_FAILED


def layers_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine layers", description="List a model's layers.")
    parser.add_argument("model")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from engine.models import build_model, describe_layers, reference_layers, resolve_layer
    from engine.schema.config import ModelConfig

    try:
        model = build_model(
            ModelConfig(name=args.model), args.in_channels, args.num_classes, image_size=args.input_size
        )
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    rows = describe_layers(model, (args.in_channels, args.input_size, args.input_size))
    # Every name a layer answers to: reference integer keys (a path may have two, e.g. 29 and -1)
    # and the symbolic names last_conv / penultimate_fc.
    names: dict[str, list[str]] = {}
    for key, path in sorted(reference_layers(model).items(), key=lambda kv: (kv[0] < 0, kv[0])):
        names.setdefault(path, []).append(str(key))
    for alias in ("last_conv", "penultimate_fc"):
        with contextlib.suppress(KeyError, ValueError):  # no such layer (e.g. no hidden FC in a ResNet)
            names.setdefault(resolve_layer(model, alias)[0], []).append(alias)
    if args.json:
        doc = [{"path": p, "type": t, "shape": list(s), "keys": names.get(p, [])} for p, t, s in rows]
        print(json.dumps(doc, indent=1))
        return EXIT_OK
    width = max((len(p) for p, _, _ in rows), default=4)
    for path, kind, shape in rows:
        key = f"  [{', '.join(names[path])}]" if path in names else ""
        print(f"{path:<{width}}  {kind:<18} {'x'.join(map(str, shape)) or '-'}{key}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from engine.bench import bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "layers":
        return layers_main(argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
