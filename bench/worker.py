"""One workload for one contender, run as its own process in the contender's
virtualenv: ``python worker.py '<json config>'``.

It prints JSON lines on stdout: results, and for the end-to-end workload a
``logged`` line after which it waits for a line on stdin (the driver saying
the records were stored) before taking its CPU and memory figures.
Standard library only, besides the contender's own package.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import contenders
from contenders import Contender

#: Fields of the small ``extra`` dict every call logs, besides ``id``.
SKU, QTY, PRICE = "AB-1234", 2, 19.99


def note_for(extra_bytes: int | None) -> str:
    """A ``note`` string that brings the JSON of the ``order`` dict to about
    ``extra_bytes`` bytes (empty for the default small dict)."""
    if not extra_bytes:
        return ""
    base = len(json.dumps({"id": 100000, "sku": SKU, "qty": QTY, "price": PRICE, "note": ""}))
    return "x" * max(0, extra_bytes - base)


def burst(logger: Any, start: int, calls: int, note: str) -> float:
    """Seconds taken by ``calls`` logging calls, back to back."""
    info = logger.info
    t0 = time.perf_counter()
    for i in range(start, start + calls):
        info(
            "Order %s placed",
            i,
            extra={"order": {"id": i, "sku": SKU, "qty": QTY, "price": PRICE, "note": note}},
        )
    return time.perf_counter() - t0


def threaded_burst(logger: Any, start: int, calls: int, note: str, threads: int) -> float:
    """Seconds until ``threads`` threads have each made ``calls`` calls."""
    if threads == 1:
        return burst(logger, start, calls, note)
    barrier = threading.Barrier(threads + 1)

    def body(k: int) -> None:
        barrier.wait()
        burst(logger, start + k * calls, calls, note)

    workers = [threading.Thread(target=body, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """User plus system CPU of this process (all its threads) so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _status_kib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far: VmHWM, not ru_maxrss,
    which on Linux keeps the parent's peak across fork and exec."""
    return _status_kib("VmHWM") / 1024


def rss_mib() -> float:
    """Resident memory now."""
    return _status_kib("VmRSS") / 1024


def emit(**fields: Any) -> None:
    """One JSON line to the driver."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def safe_stats(c: Contender) -> dict[str, Any]:
    try:
        return dict(c.stats())
    except Exception as exc:  # a peer's counters are informative only
        return {"error": repr(exc)}


# --- workloads ---------------------------------------------------------------


def run_app(cfg: dict[str, Any]) -> None:
    """App-thread cost: bursts of calls to the floor logger and to the
    contender's, alternating (ABBA) in the same process."""
    floor = contenders.floor()
    c = contenders.build(cfg["contender"], cfg.get("url"), **cfg.get("options", {}))
    calls, reps, threads = cfg["calls"], cfg["reps"], cfg.get("threads", 1)
    note = note_for(cfg.get("extra_bytes"))
    logged = 0
    floor_s: list[float] = []
    cont_s: list[float] = []
    with c.context():
        # Warm-up: first calls pay for imports, caches, thread start.
        burst(floor.logger, 0, 200, note)
        burst(c.logger, 0, 200, note)
        logged += 200
        c.flush()
        for rep in range(reps):
            arms: list[tuple[Contender, list[float]]] = [(floor, floor_s), (c, cont_s)]
            if rep % 2:
                arms.reverse()
            for who, out in arms:
                out.append(threaded_burst(who.logger, logged, calls, note, threads))
                if who is c:
                    logged += calls * threads
                    # Let the contender's shipping finish before the next
                    # arm, so it does not slow the floor's rep down.
                    c.flush()
    per_call = calls * threads
    emit(
        event="result",
        floor_us=[s / per_call * 1e6 for s in floor_s],
        contender_us=[s / per_call * 1e6 for s in cont_s],
        logged=logged,
        stats=safe_stats(c),
    )
    c.close()
    emit(event="closed", stats=safe_stats(c))


def run_e2e(cfg: dict[str, Any]) -> None:
    """End to end: ``records`` calls as fast as possible with default
    settings, then close; CPU and peak RSS once the driver saw them stored."""
    c = contenders.build(cfg["contender"], cfg.get("url"))
    n = cfg["records"]
    note = note_for(None)
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    burst(c.logger, 0, n, note)
    t_logged = time.monotonic()
    c.close()
    t_closed = time.monotonic()
    emit(event="logged", t0=t0, t_logged=t_logged, t_closed=t_closed, stats=safe_stats(c))
    sys.stdin.readline()
    emit(
        event="result",
        cpu_s=cpu_seconds() - cpu0,
        peak_rss_mib=peak_rss_mib(),
        stats=safe_stats(c),
    )


def run_bytes(cfg: dict[str, Any]) -> None:
    """Bytes on the wire: ``records`` calls in chunks of one batch, each
    chunk flushed, so no contender drops for lack of room. Each record's
    ``note`` is 16 random hex digits (a request id, say), so that batches are
    not all alike to a compressor."""
    c = contenders.build(cfg["contender"], cfg.get("url"), **cfg.get("options", {}))
    n, chunk = cfg["records"], cfg["chunk"]
    info = c.logger.info
    for start in range(0, n, chunk):
        for i in range(start, min(n, start + chunk)):
            order = {"id": i, "sku": SKU, "qty": QTY, "price": PRICE, "note": os.urandom(8).hex()}
            info("Order %s placed", i, extra={"order": order})
        c.flush()
    c.close()
    emit(event="result", logged=n, stats=safe_stats(c))


def spin(stop: threading.Event, out: list[int]) -> None:
    """A pure-Python CPU loop: counts iterations until told to stop."""
    n, x = 0, 1
    is_set = stop.is_set
    while not is_set():
        for _ in range(100):
            x = (x * 31 + 7) % 1000003
        n += 1
    out.append(n)


def paced(logger: Any, records: int, rate: float, note: str) -> None:
    """``records`` calls at ``rate`` a second, in chunks of 50."""
    chunk = 50
    t0 = time.perf_counter()
    for start in range(0, records, chunk):
        burst(logger, start, min(chunk, records - start), note)
        delay = t0 + (start + chunk) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def run_gil(cfg: dict[str, Any]) -> None:
    """The GIL: iterations/s of a CPU loop in another thread while records
    are logged at a steady rate and shipped (until flushed), against the same
    loop while the same calls go to the floor (nothing ships)."""
    floor = contenders.floor()
    c = contenders.build(cfg["contender"], cfg.get("url"))
    records, rate, reps = cfg["records"], cfg["rate"], cfg["reps"]
    note = note_for(None)
    floor_ips: list[float] = []
    cont_ips: list[float] = []
    burst(c.logger, 0, 200, note)
    c.flush()
    for rep in range(reps):
        arms: list[tuple[Contender, list[float]]] = [(floor, floor_ips), (c, cont_ips)]
        if rep % 2:
            arms.reverse()
        for who, out in arms:
            stop = threading.Event()
            counted: list[int] = []
            t = threading.Thread(target=spin, args=(stop, counted))
            t0 = time.perf_counter()
            t.start()
            paced(who.logger, records, rate, note)
            who.flush()
            stop.set()
            t.join()
            out.append(counted[0] / (time.perf_counter() - t0))
    emit(event="result", floor_ips=floor_ips, contender_ips=cont_ips, stats=safe_stats(c))
    c.close()


def run_outage(cfg: dict[str, Any]) -> None:
    """Memory while the endpoint does not answer: ``rate`` records/s for
    ``seconds``; resident memory sampled as it goes."""
    c = contenders.build(cfg["contender"], cfg.get("url"))
    rate, seconds = cfg["rate"], cfg["seconds"]
    note = note_for(None)
    base = rss_mib()
    highest = base
    t0 = time.perf_counter()
    sent = 0
    while sent < rate * seconds:
        burst(c.logger, sent, 100, note)
        sent += 100
        highest = max(highest, rss_mib())
        delay = t0 + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    emit(
        event="result",
        logged=sent,
        rss_start_mib=base,
        rss_sampled_peak_mib=highest,
        peak_rss_mib=peak_rss_mib(),
        stats=safe_stats(c),
    )
    # Closing would wait on an endpoint that never answers: leave now.
    os._exit(0)


WORKLOADS: dict[str, Callable[[dict[str, Any]], None]] = {
    "app": run_app,
    "e2e": run_e2e,
    "bytes": run_bytes,
    "gil": run_gil,
    "outage": run_outage,
}


def main() -> None:
    cfg = json.loads(sys.argv[1])
    WORKLOADS[cfg["workload"]](cfg)


if __name__ == "__main__":
    main()
