"""A small, steady workload for profilers: timber's handler ``emit`` (and its
sender threads) on prebuilt records, against a collector on 127.0.0.1.

    .venv/bin/python bench/profile_emit.py --records 200000
    valgrind --tool=callgrind --callgrind-out-file=bench/results/emit.callgrind \\
        .venv/bin/python bench/profile_emit.py --records 20000
    perf record -e cpu-clock -g -o bench/results/emit.perf \\
        .venv/bin/python bench/profile_emit.py --records 500000

``--mode log`` goes through ``logger.info`` instead (the whole call);
``--mode encode`` times ``emit`` against an engine whose buffer refuses
nothing but whose senders have nowhere to send (the encoding alone, no
collector). It prints µs per call.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import timber
from contenders import SOURCE
from servers import Collector


def records(n: int) -> list[logging.LogRecord]:
    logger = logging.getLogger("bench.profile")
    return [
        logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            42,
            "Order %s placed",
            (i,),
            None,
            func="checkout",
            extra={"order": {"id": i, "sku": "AB-1234", "qty": 2, "price": 19.99, "note": ""}},
        )
        for i in range(n)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--mode", choices=["emit", "log", "encode"], default="emit")
    parser.add_argument("--context", action="store_true", help="inside a timber.context block")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as out,
        Collector([sys.executable, "-m", "timber", "collect"], Path(out)) as collector,
    ):
        host = collector.url if args.mode != "encode" else "http://127.0.0.1:9"
        handler = timber.TimberHandler(
            api_key=SOURCE, source_id=SOURCE, host=host, retry_timeout=1.0
        )
        # A thousand records, emitted in turn: building each record would
        # cost more than emitting it and blur the profile.
        batch = records(min(args.records, 1000)) if args.mode != "log" else []
        logger = logging.getLogger("bench.profile")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
        block = timber.context(user={"id": 123}) if args.context else None
        if block is not None:
            block.__enter__()
        emit = handler.emit
        t0 = time.perf_counter()
        if args.mode == "log":
            info = logger.info
            for i in range(args.records):
                info(
                    "Order %s placed",
                    i,
                    extra={
                        "order": {"id": i, "sku": "AB-1234", "qty": 2, "price": 19.99, "note": ""}
                    },
                )
        else:
            for i in range(args.records):
                emit(batch[i % len(batch)])
        took = time.perf_counter() - t0
        if block is not None:
            block.__exit__(None, None, None)
        handler.close()
        stats = handler.stats()
    print(
        f"pid {os.getpid()} {args.mode}: {took / args.records * 1e6:.2f} µs/call over {args.records:,} records; "
        f"sent {stats['sent']:,}, dropped {stats['dropped']:,}, {stats['bytes_sent']:,} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
