"""``timber demo``: the whole path on this machine.

Starts a collector on a free loopback port with a random API key, sets up a
``TimberHandler`` as the documentation's "HTTP (inline)" snippet does, logs
the documentation's example and then a burst of records, flushes, and shows
what the collector stored. Exits non-zero if a single record is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timber

SOURCE_ID = "demo"


def _start_collector(out: Path, api_key: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "timber",
            "collect",
            "--listen",
            "127.0.0.1:0",
            "--out",
            str(out),
            "--api-key",
            api_key,
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    marker = "listening on "
    if marker not in line:
        proc.kill()
        raise SystemExit(f"timber demo: the collector did not start ({line.strip()!r})")
    url = line.split(marker, 1)[1].split(",", 1)[0].strip()
    return proc, url


def _progress(done: int, total: int, started: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    rate = done / max(time.perf_counter() - started, 1e-9)
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\r  shipping [{bar}] {done:>9,}/{total:,}  {rate:>10,.0f} records/s")
    sys.stderr.flush()


def _stored(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timber demo", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="size of the burst")
    parser.add_argument("--out", type=Path, default=Path("timber-logs"), help="collector output")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    stored_path = args.out / f"{SOURCE_ID}.ndjson"
    stored_path.unlink(missing_ok=True)
    api_key = secrets.token_hex(16)
    collector, url = _start_collector(args.out, api_key)
    os.environ["TIMBER_HOST"] = url
    print(f"collector: {url} (api key {api_key[:4]}…), storing into {stored_path}")
    try:
        return _run(args.records, stored_path, api_key)
    finally:
        collector.terminate()
        collector.wait(timeout=30)


def _run(records: int, stored_path: Path, api_key: str) -> int:
    # As in the documentation's "HTTP (inline)" snippet; the host comes from
    # TIMBER_HOST, set above to the local collector.
    logger = logging.getLogger(__name__)
    logger.setLevel(logging.INFO)
    timber_handler = timber.TimberHandler(source_id=SOURCE_ID, api_key=api_key)
    logger.addHandler(timber_handler)

    with timber.context(user={"id": 123}):
        logger.info(
            "Order #1234 placed, total: $520.23",
            extra={"order_placed": {"id": 1234, "total": 520.23}},
        )

    started = time.perf_counter()
    with timber.context(job={"id": "burst"}):
        for i in range(records):
            logger.info("Burst record %d", i, extra={"burst": {"n": i}})
    logged = time.perf_counter() - started

    flushing = threading.Thread(target=timber_handler.flush)
    flushing.start()
    while flushing.is_alive():
        _progress(timber_handler.stats()["sent"], records + 1, started)
        flushing.join(0.1)
    _progress(timber_handler.stats()["sent"], records + 1, started)
    elapsed = time.perf_counter() - started
    sys.stderr.write("\n")
    stats = timber_handler.stats()
    logger.removeHandler(timber_handler)
    timber_handler.close()

    frames = _stored(stored_path)
    example = next((f for f in frames if "order_placed" in f), None)
    burst = {f["burst"]["n"] for f in frames if isinstance(f.get("burst"), dict)}
    print("\nThe documentation's example, as the collector stored it:")
    print(json.dumps(example, indent=4))
    print()
    print(f"records sent:     {stats['sent']:,} (dropped {stats['dropped']:,})")
    print(f"records stored:   {len(frames):,} in {stored_path}")
    print(f"logging calls:    {records:,} in {logged:.2f} s ({records / logged:,.0f} records/s)")
    print(f"delivered:        all in {elapsed:.2f} s ({len(frames) / elapsed:,.0f} records/s)")
    print(f"bytes on the wire: {stats['bytes_sent'] / max(stats['sent'], 1):.0f} per record")
    missing = records - len(burst) + (0 if example else 1)
    if missing or len(frames) != records + 1:
        print(f"FAILED: {missing} records missing, {len(frames) - records - 1} extra")
        return 1
    print("OK: every record arrived exactly once.")
    return 0
