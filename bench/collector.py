"""The bundled collector under load: latency of a 1,000-frame msgpack batch
(p50/p99, one keep-alive connection) and frames/s ingested with several
concurrent clients. Writes bench/results/collector.md.

Targets: p99 under 5 ms for a 1,000-frame batch; at least 200,000 frames/s.
"""

from __future__ import annotations

import argparse
import http.client
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent


def frame(i: int) -> dict[str, object]:
    return {
        "dt": "2026-11-23T12:00:00.000000Z",
        "level": "info",
        "message": f"Order {i} placed",
        "order": {"id": i, "total": 520.23, "currency": "USD", "items": 3},
        "context": {
            "runtime": {
                "function": "place",
                "file": "orders.py",
                "line": 42,
                "thread_id": "140000000000000",
                "thread_name": "MainThread",
                "logger_name": "shop.orders",
            },
            "system": {"pid": 4242, "process_name": "MainProcess", "hostname": "web-1"},
            "user": {"id": 123},
        },
    }


def start(out: Path) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "timber", "collect", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*command, "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    port = int(line.split("127.0.0.1:")[1].split(",")[0].split("/")[0])
    return proc, port


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    conn.request(
        "POST",
        "/sources/bench/frames",
        body=body,
        headers={"Content-Type": "application/msgpack"},
    )
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 202, resp.status


def latency(port: int, body: bytes, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    post(conn, body)  # warm the connection
    times = []
    for _ in range(n):
        t = time.perf_counter()
        post(conn, body)
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    return times


def throughput(port: int, body: bytes, clients: int, seconds: float) -> tuple[float, int]:
    sent = [0] * clients
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            post(conn, body)
            sent[k] += 1
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(sent) * 1000 / (time.perf_counter() - started), sum(sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, seconds, reps = (200, 1.0, 2) if args.quick else (1000, 2.0, 3)
    body = msgpack.packb([frame(i) for i in range(1000)])
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(Path(tmp))
        try:
            lat = latency(port, body, n)
            runs = [throughput(port, body, 4, seconds) for _ in range(reps)]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            lines = sum(1 for _ in open(Path(tmp) / "bench.ndjson", encoding="utf-8"))
    q = statistics.quantiles(lat, n=100)
    p50, p99 = statistics.median(lat), q[98]
    rates = [r for r, _ in runs]
    rate = statistics.median(rates)
    batches = n + 1 + sum(b for _, b in runs)
    verdict = lambda ok: "**MET**" if ok else "**MISSED**"  # noqa: E731
    report = f"""# The bundled collector under load

- date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; Python {platform.python_version()}
- collector: `python -m timber collect` on 127.0.0.1; clients: Python http.client, keep-alive
- body: one msgpack array of 1,000 frames, {len(body):,} bytes ({len(body) // 1000} B/frame)
- every frame stored: {lines:,} lines for {batches:,} batches answered 202 ({"all" if lines == batches * 1000 else "NOT all"})

| measure | this run | target | verdict |
| --- | --- | --- | --- |
| 1,000-frame batch, one connection, {n} requests | p50 {p50:.2f} ms, p99 {p99:.2f} ms | p99 < 5 ms | {verdict(p99 < 5)} |
| ingest, 4 concurrent clients, {reps} x {seconds:.0f} s | {rate:,.0f} frames/s (min {min(rates):,.0f}, max {max(rates):,.0f}) | >= 200,000 frames/s | {verdict(rate >= 200_000)} |

Latency is the client's: request sent to answer read, so it includes the
Python client's own time. Throughput counts frames answered 202, each stored
as a JSON line before the answer.
"""
    print(report)
    name = "collector-quick.md" if args.quick else "collector.md"
    (HERE / "results" / name).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
