"""The ``timber`` command: ``collect`` runs the bundled collector, ``tail`` reads
what it stored, ``demo`` shows the whole pipeline.

``timber tail`` prints one line per frame for a person::

    2019-03-04 03:44:21.221 INFO  shop.orders  Order placed  order_placed={"id":1234} user={"id":123}

time, level, logger (``context.runtime.logger_name``), message, then the extras
(top-level keys other than ``dt``, ``level``, ``message`` and ``context``) and the
custom context (``context`` keys other than ``runtime`` and ``system``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

DEFAULT_LISTEN = "127.0.0.1:8765"
DEFAULT_OUT = "./timber-logs"

#: Seconds between two looks at the files under ``timber tail --follow``.
FOLLOW_INTERVAL = 0.2

#: Rank of each level name for ``--level``; names not listed are always shown.
LEVELS = {
    "trace": 5,
    "debug": 10,
    "info": 20,
    "notice": 25,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "critical": 50,
    "fatal": 50,
}

_COLOURS = {
    "trace": "\x1b[2m",
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "notice": "\x1b[36m",
    "warn": "\x1b[33m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
    "fatal": "\x1b[1;31m",
}
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


def _level(text: str) -> str:
    name = text.lower()
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {text!r}: choose from {', '.join(LEVELS)}")
    return name


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``timber`` command."""
    parser = argparse.ArgumentParser(
        prog="timber", description="Structured Python logs, shipped fast by a Rust engine."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # `timber collect` is parsed by the collector itself (see _collect); this
    # entry only lists it under `timber --help`.
    commands.add_parser(
        "collect",
        add_help=False,
        help="receive frames over HTTP and store them as NDJSON (see 'timber collect --help')",
    )

    tail = commands.add_parser(
        "tail",
        help="print stored frames for a person",
        description="Print the frames stored by 'timber collect'.",
    )
    tail.add_argument(
        "path",
        nargs="?",
        default=DEFAULT_OUT,
        metavar="PATH",
        help=f"a directory of *.ndjson files or one file (default {DEFAULT_OUT})",
    )
    tail.add_argument(
        "-f", "--follow", action="store_true", help="keep printing frames as they arrive"
    )
    tail.add_argument("--source", metavar="ID", help="only this source")
    tail.add_argument(
        "--level", type=_level, metavar="LEVEL", help="only this level and above, e.g. warn"
    )
    tail.add_argument("--grep", metavar="TEXT", help="only frames whose line contains TEXT")
    tail.add_argument("--json", action="store_true", help="print the stored JSON lines")
    tail.set_defaults(run=_tail)

    demo = commands.add_parser("demo", help="log through a local collector and show the result")
    demo.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``timber`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        # The demo parses its own options (argparse.REMAINDER would refuse
        # ones that start with a dash).
        return _demo(argparse.Namespace(args=argv[1:]))
    if argv[:1] == ["collect"]:
        return _collect(argv[1:])
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


# --- collect ---------------------------------------------------------------


def _collect(argv: list[str]) -> int:
    """Runs the collector; its own parser (shared with the ``timber-collector``
    binary) reads the flags and prints usage and mistakes."""
    from timber import _engine

    try:
        return _engine.collect_main(argv)
    except KeyboardInterrupt:
        return 0


# --- demo ------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    import importlib

    demo: Any = importlib.import_module("timber.demo")
    status: int | None = demo.main(args.args)
    return status or 0


# --- tail ------------------------------------------------------------------


class _Files:
    """The stored files under a path, read incrementally: each call to
    :meth:`read` returns the complete lines added since the last one."""

    def __init__(self, path: Path, source: str | None) -> None:
        self.path = path
        self.source = source
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}

    def paths(self) -> list[Path]:
        if self.path.is_dir():
            if self.source is not None:
                return [self.path / f"{self.source}.ndjson"]
            return sorted(self.path.glob("*.ndjson"))
        if self.source is not None and self.path.stem != self.source:
            return []
        return [self.path]

    def read(self) -> list[tuple[str, str]]:
        """New ``(source, line)`` pairs, across files in time order."""
        found: list[tuple[str, str]] = []
        paths = self.paths()
        for path in paths:
            found.extend((path.stem, line) for line in self._read_one(path))
        if len(paths) > 1:
            found.sort(key=lambda item: _time_key(item[1]))
        return found

    def _read_one(self, path: Path) -> list[str]:
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                offset = self.offsets.get(path, 0)
                if size < offset:  # truncated or replaced: start again
                    offset = 0
                    self.partial.pop(path, None)
                f.seek(offset)
                data = f.read(size - offset)
        except (FileNotFoundError, IsADirectoryError):
            return []
        self.offsets[path] = offset + len(data)
        *lines, rest = (self.partial.pop(path, b"") + data).split(b"\n")
        if rest:
            self.partial[path] = rest
        return [line.decode("utf-8", "replace") for line in lines if line.strip()]


_DT = re.compile(r'"dt"\s*:\s*"([^"]*)"')


def _time_key(line: str) -> str:
    match = _DT.search(line)
    return match.group(1) if match else ""


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _short_time(dt: Any) -> str:
    if not isinstance(dt, str):
        return "-" if dt is None else str(dt)
    # 2019-03-04T03:44:21.221232Z -> 2019-03-04 03:44:21.221
    match = re.match(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d{1,3})?\d*Z$", dt)
    return f"{match.group(1)} {match.group(2)}{match.group(3) or ''}" if match else dt


class _Printer:
    """Renders frames for a person, filters them, and writes them out."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.out = out
        self.raw = bool(args.json)
        self.grep: str | None = args.grep
        self.min_rank = LEVELS[args.level] if args.level else None
        self.colour = out.isatty() and not os.environ.get("NO_COLOR")

    def show(self, items: Iterable[tuple[str, str]], many_sources: bool) -> None:
        for source, line in items:
            try:
                frame: Any = json.loads(line)
            except ValueError:
                frame = None
            if not isinstance(frame, dict):
                frame = None
            if not self._level_ok(frame):
                continue
            plain = self.render(frame, line, source if many_sources else None, colour=False)
            if self.grep is not None and self.grep not in plain:
                continue
            if self.raw:
                text = line
            elif self.colour:
                text = self.render(frame, line, source if many_sources else None, colour=True)
            else:
                text = plain
            self.out.write(text + "\n")
        self.out.flush()

    def _level_ok(self, frame: dict[str, Any] | None) -> bool:
        if self.min_rank is None or frame is None:
            return True
        level = frame.get("level")
        rank = LEVELS.get(level.lower()) if isinstance(level, str) else None
        return rank is None or rank >= self.min_rank

    def render(
        self, frame: dict[str, Any] | None, line: str, source: str | None, colour: bool
    ) -> str:
        if frame is None:
            return line
        dim, reset = (_DIM, _RESET) if colour else ("", "")
        parts: list[str] = []
        if source is not None:
            parts.append(f"{dim}[{source}]{reset}")
        parts.append(_short_time(frame.get("dt")))
        level = str(frame.get("level", "-"))
        label = f"{level.upper():<5}"
        if colour:
            label = f"{_COLOURS.get(level.lower(), '')}{label}{_RESET}"
        parts.append(label)
        context = frame.get("context")
        context = context if isinstance(context, dict) else {}
        runtime = context.get("runtime")
        logger = runtime.get("logger_name") if isinstance(runtime, dict) else None
        if logger:
            parts.append(f"{dim}{logger}{reset}")
        message = frame.get("message")
        parts.append(message if isinstance(message, str) else _compact(message))
        extras = [
            (k, v) for k, v in frame.items() if k not in ("dt", "level", "message", "context")
        ]
        extras += [(k, v) for k, v in context.items() if k not in ("runtime", "system")]
        parts.extend(f"{dim}{k}={reset}{_compact(v)}" for k, v in extras)
        return "  ".join(parts)


def _tail(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists() and not args.follow:
        print(f"timber tail: no such file or directory: {path}", file=sys.stderr)
        return 1
    files = _Files(path, args.source)
    printer = _Printer(args, sys.stdout)
    try:
        printer.show(files.read(), len(files.paths()) > 1)
        while args.follow:
            time.sleep(FOLLOW_INTERVAL)
            printer.show(files.read(), len(files.paths()) > 1)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`timber tail | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0
