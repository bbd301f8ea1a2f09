"""`create_table=True` under a burst: rounds of a 5,000-record burst, each
into a table that does not exist yet, with the default two senders and with
eight, against Debian's ClickHouse 18.16 and the current engine (chdb).
Every record must be stored once: the batches in flight while the table is
made (and, on 18.16, while the deduplication token is found missing) wait
for the repair, then go in.

    python bench/clickhouse_create.py [--rounds 20] [--records 5000]

Prints one line per server and sender count, and exits non-zero if any
round lost or duplicated a record. tests/test_clickhouse_repairs.py runs
three rounds of the same."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from chdb_server import ChdbServer  # noqa: E402
from clickhouse_server import ClickHouse  # noqa: E402
from clickhouse_server import handler as clickhouse_handler  # noqa: E402


def round_trip(url: str, query: Any, table: str, records: int, senders: int | None) -> str:
    """One burst into a missing table; what went wrong, or ''."""
    more = {} if senders is None else {"max_in_flight": senders}
    h = clickhouse_handler(url, table, create_table=True, **more)
    logger = logging.getLogger(f"bench.{table}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(h)
    for i in range(records):
        logger.info("burst %d", i, extra={"n": i})
    h.flush()
    stats = h.stats()
    logger.removeHandler(h)
    h.close()
    rows, bodies = (int(n) for n in query(f"SELECT count(), uniqExact(Body) FROM {table}").split())
    if (stats["sent"], stats["dropped"], rows, bodies) != (records, 0, records, records):
        return (
            f"sent {stats['sent']}, dropped {stats['dropped']}, stored {rows} ({bodies} distinct)"
        )
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        old = ClickHouse(Path(tmp) / "old")
        current = ChdbServer(Path(tmp) / "current")
        try:
            for name, server in (("18.16", old), (f"current {current.version}", current)):
                for senders in (None, 8):
                    started = time.monotonic()
                    problems = []
                    for r in range(args.rounds):
                        table = f"burst_{senders or 2}_{r}"
                        why = round_trip(server.url, server.query, table, args.records, senders)
                        if why:
                            problems.append(f"round {r}: {why}")
                    failed += len(problems)
                    print(
                        f"{name}, {senders or 2} senders: {args.rounds - len(problems)} of "
                        f"{args.rounds} rounds stored all {args.records} records once "
                        f"({time.monotonic() - started:.1f} s)"
                    )
                    for p in problems:
                        print("  " + p)
        finally:
            old.close()
            current.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
