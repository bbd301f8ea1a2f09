"""The ``timber`` command: ``collect`` runs the bundled collector, ``tail`` reads
what it stored, ``demo`` shows the whole pipeline.

``timber tail`` prints one line per frame for a person::

    2019-03-04 03:44:21.221 INFO  shop.orders  Order placed  order_placed={"id":1234} user={"id":123}

time, level, logger (``context.runtime.logger_name``), message, then the extras
(top-level keys other than ``dt``, ``level``, ``message`` and ``context``) and the
custom context (``context`` keys other than ``runtime`` and ``system``);
control characters are shown escaped. The reading itself is ``timber._tail``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_OUT = "./timber-logs"


def _level(text: str) -> str:
    from timber._tail import LEVELS

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
    tail.add_argument(
        "--json",
        action="store_true",
        help="print the stored JSON lines (control characters as \\u00XX on a terminal)",
    )
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


def _tail(args: argparse.Namespace) -> int:
    from timber import _tail

    return _tail.run(args)
