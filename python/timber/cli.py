"""The ``timber`` command: ``collect`` runs the bundled collector, ``tail`` reads
what it stored, ``query`` reads what ``destination='clickhouse'`` stored,
``demo`` shows the whole pipeline.

``timber tail`` prints one line per frame for a person::

    2019-03-04 03:44:21.221 INFO  shop.orders  Order placed  order_placed={"id":1234} user={"id":123}

time, level, logger (``context.runtime.logger_name``), message, then the extras
(top-level keys other than ``dt``, ``level``, ``message`` and ``context``) and the
custom context (``context`` keys other than ``runtime`` and ``system``);
control characters are shown escaped. The reading itself is ``timber._tail``.

``timber query`` prints rows of a ClickHouse ``otel_logs`` table the same way:
``ScopeName`` as the logger, ``Body`` as the message, then ``LogAttributes``;
``timber._query`` does the reading.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_OUT = "./timber-logs"
DEFAULT_CLICKHOUSE = "http://localhost:8123"


def _level(text: str) -> str:
    from timber._tail import LEVELS

    name = text.lower()
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {text!r}: choose from {', '.join(LEVELS)}")
    return name


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of rows, 1 or more, not {text!r}")
    return n


def _seconds(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        n = 0.0
    if not 0 < n <= 86400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds up to 86400, not {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``timber`` command."""
    parser = argparse.ArgumentParser(
        prog="timber", description="Structured Python logs, shipped fast by a Rust engine."
    )
    from timber import __version__

    parser.add_argument("--version", action="version", version=f"timber {__version__}")
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

    query = commands.add_parser(
        "query",
        help="print log rows stored in ClickHouse for a person",
        description="Print the newest rows of a ClickHouse otel_logs table (as written by "
        "destination='clickhouse'), oldest first, in the shape of 'timber tail'.",
        epilog="TIME is an ISO time (2026-11-24T10:00:00, '2026-11-24 10:00:00', "
        "2026-11-24T10:00:00+01:00; without a zone it is UTC) or a duration before now "
        "(30s, 10m, 2h, 1d). Times are printed in UTC.",
    )
    query.add_argument(
        "--clickhouse",
        default=DEFAULT_CLICKHOUSE,
        metavar="URL",
        help=f"the server's HTTP interface (default {DEFAULT_CLICKHOUSE})",
    )
    query.add_argument(
        "--table",
        default="otel_logs",
        metavar="NAME",
        help="table or database.table (default otel_logs)",
    )
    query.add_argument(
        "--user", metavar="USER", help="ClickHouse user (default $TIMBER_CLICKHOUSE_USER)"
    )
    query.add_argument(
        "--password",
        metavar="PASSWORD",
        help="ClickHouse password (default $TIMBER_CLICKHOUSE_PASSWORD; prefer it, since "
        "other users of the machine can see a command line)",
    )
    query.add_argument(
        "--service", "--source", dest="service", metavar="NAME", help="only this ServiceName"
    )
    query.add_argument(
        "--level", type=_level, metavar="LEVEL", help="only this level and above, e.g. warn"
    )
    query.add_argument(
        "--grep",
        metavar="TEXT",
        help="only rows whose printed line (without the [service] label) contains TEXT",
    )
    query.add_argument("--since", metavar="TIME", help="only rows at TIME or later")
    query.add_argument("--until", metavar="TIME", help="only rows before TIME")
    query.add_argument(
        "--limit",
        type=_positive,
        default=100,
        metavar="N",
        help="print the newest N matching rows (default 100), oldest first",
    )
    query.add_argument(
        "--json",
        action="store_true",
        help="print each row as one JSON object, maps as objects, Timestamp in UTC",
    )
    query.add_argument(
        "--timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="the longest the whole query may wait for the server (default 120)",
    )
    query.set_defaults(run=_query)

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


# --- query -----------------------------------------------------------------


def _query(args: argparse.Namespace) -> int:
    from timber import _query

    return _query.run(args)
