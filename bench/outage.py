"""How fast a full buffer drains once an outage ends.

A ``TimberHandler`` logs typical records to a port nothing listens on until
its buffer is full (``max_buffer_bytes``, 64 MiB by default), the outage
lasts ``--outage`` seconds, then ``timber collect`` starts on that port.
Printed: the time from the collector's start to the first batch delivered,
and the records per second from that first batch until the buffer is
empty, beside the same handler's rate into a collector that was up all
along (the path's normal rate).

    .venv/bin/python bench/outage.py [--outage 30] [--records N]
"""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timber


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_collector(port: int, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "timber", "collect", "--listen", f"127.0.0.1:{port}"),
            *("--out", str(out), "--quiet", "--api-key", "k"),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # listening
    return proc


def log_typical(logger: logging.Logger, i: int) -> None:
    logger.info(
        "Order #%d placed, total: $520.23",
        i,
        extra={"order_placed": {"id": i, "total": 520.23, "items": ["a", "b", "c"]}},
    )


def handler(port: int) -> tuple[logging.Logger, timber.TimberHandler]:
    logger = logging.getLogger(f"outage-{port}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    h = timber.TimberHandler(api_key="k", source_id="s", host=f"http://127.0.0.1:{port}")
    logger.addHandler(h)
    return logger, h


def drain(h: timber.TimberHandler, since: float) -> tuple[float, float]:
    """Seconds from ``since`` to the first delivery, and to an empty buffer."""
    first = None
    while True:
        s = h.stats()
        now = time.monotonic()
        if first is None and s["sent"] > 0:
            first = now
        if s["buffered_records"] == 0:
            return (first or now) - since, now - since
        time.sleep(0.005)


def normal_rate(records: int, out: Path) -> float:
    port = free_port()
    proc = start_collector(port, out / "normal")
    try:
        logger, h = handler(port)
        start = time.monotonic()
        for i in range(records):
            log_typical(logger, i)
        assert h._engine.flush(300.0)
        rate = records / (time.monotonic() - start)
        h.close()
        return rate
    finally:
        proc.terminate()
        proc.wait()


def after_outage(outage: float, out: Path) -> tuple[int, float, float]:
    port = free_port()
    logger, h = handler(port)
    start = time.monotonic()
    i = 0
    while h.stats()["dropped"] == 0:
        log_typical(logger, i)
        i += 1
    held = h.stats()["buffered_records"]
    time.sleep(max(0.0, start + outage - time.monotonic()))
    proc = start_collector(port, out / "after")
    try:
        since = time.monotonic()
        to_first, to_empty = drain(h, since)
        assert h._engine.flush(300.0)
        h.close()
        return held, to_first, to_empty
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=30.0, help="seconds without an endpoint")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        held, to_first, to_empty = after_outage(args.outage, Path(tmp))
        rate = held / max(1e-9, to_empty - to_first)
        normal = normal_rate(held, Path(tmp))
    print(f"buffered at the end of a {args.outage:.0f} s outage: {held:,} records")
    print(f"collector start to the first batch delivered: {to_first:.1f} s")
    print(f"then the backlog drained in {to_empty - to_first:.2f} s: {rate:,.0f} records/s")
    print(f"the same records into a collector up all along: {normal:,.0f} records/s")


if __name__ == "__main__":
    main()
