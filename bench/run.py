"""``make bench``: timber against its peers, side by side, in one run.

Sets up each peer's virtualenv, runs every workload as a separate process
per contender, against the bundled collector (or the OTLP sink) on
127.0.0.1, then prints the tables and writes them to
``bench/results/latest.md`` (raw figures to ``bench/results/latest.json``;
``latest-quick.*`` for ``--quick``).

    python bench/run.py            # the full run, a few minutes
    python bench/run.py --quick    # under a minute: fewer reps and records
    python bench/run.py --only app,e2e
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs
from contenders import BUILDERS, SOURCE
from report import Table, Target, median, ratios, spread, targets_table
from servers import (
    Collector,
    CountingProxy,
    HangingSink,
    OtlpSink,
    RecordCounter,
)

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
WORKER = BENCH / "worker.py"
MIB = 2**20

#: Contender -> the virtualenv it runs in (None: timber's own .venv).
VENV_OF: dict[str, str | None] = {
    "floor": None,
    "stream": None,
    "stream-timber": None,
    "timber": None,
    "timber-ctx": None,
    "stream-json": "json-logger",
    "timber-2.1.0": "timber-2.1.0",
    "logtail": "logtail",
    "otel": "otel",
    "timber-otlp": None,
}

SHIPPERS = ["timber", "timber-2.1.0", "logtail", "otel"]
LABEL = {
    "floor": "floor (NullHandler)",
    "stream": "StreamHandler, default formatter",
    "stream-json": "StreamHandler + python-json-logger",
    "stream-timber": "StreamHandler + timber.TimberFormatter",
    "timber": "**timber** TimberHandler",
    "timber-ctx": "**timber** TimberHandler, in timber.context",
    "timber-2.1.0": "timber 2.1.0 (PyPI)",
    "logtail": "logtail-python",
    "otel": "OpenTelemetry SDK, OTLP/HTTP",
    "timber-otlp": "**timber** TimberHandler, destination='otlp'",
}

WORKLOADS = ["app", "e2e", "format", "bytes", "gil", "outage", "scale"]


@dataclass
class Plan:
    """How much of everything a run does."""

    app_reps: int
    app_calls: int
    app_contenders: list[str]
    e2e_records: int
    e2e_reps: int
    e2e_contenders: list[str]
    format_reps: int
    format_calls: int
    bytes_records: int
    bytes_contenders: list[str]
    gil_records: int
    gil_rate: float
    gil_reps: int
    gil_contenders: list[str]
    outage_seconds: float
    outage_rate: float
    outage_contenders: list[str]
    scale_reps: int
    scale_calls: int
    scale_sizes: list[int]
    scale_threads: list[int]


FULL = Plan(
    app_reps=10,
    app_calls=2000,
    app_contenders=["timber", "timber-ctx", "timber-otlp", "timber-2.1.0", "logtail", "otel"],
    e2e_records=200_000,
    e2e_reps=3,
    e2e_contenders=["floor", *SHIPPERS, "timber-otlp"],
    format_reps=10,
    format_calls=5000,
    bytes_records=10_000,
    bytes_contenders=[*SHIPPERS, "timber-otlp"],
    gil_records=100_000,
    gil_rate=50_000,
    gil_reps=4,
    gil_contenders=SHIPPERS,
    outage_seconds=30,
    outage_rate=1000,
    outage_contenders=SHIPPERS,
    scale_reps=10,
    scale_calls=3000,
    scale_sizes=[100, 1000, 10_000],
    scale_threads=[1, 4, 16],
)

QUICK = Plan(
    app_reps=4,
    app_calls=1000,
    app_contenders=["timber", "timber-ctx", "timber-otlp", "logtail", "otel"],
    e2e_records=20_000,
    e2e_reps=1,
    e2e_contenders=["floor", "timber", "timber-otlp", "logtail", "otel"],
    format_reps=4,
    format_calls=2000,
    bytes_records=2000,
    bytes_contenders=["timber", "timber-otlp", "logtail", "otel"],
    gil_records=20_000,
    gil_rate=50_000,
    gil_reps=2,
    gil_contenders=["timber"],
    outage_seconds=5,
    outage_rate=1000,
    outage_contenders=["timber"],
    scale_reps=2,
    scale_calls=1000,
    scale_sizes=[100, 10_000],
    scale_threads=[1, 16],
)


# --- running workers ---------------------------------------------------------


class Worker:
    """One ``worker.py`` process; its stdout read as JSON events."""

    def __init__(self, python: Path, cfg: dict[str, Any], scratch: Path) -> None:
        self.stderr_path = scratch / f"worker-{uuid.uuid4().hex[:8]}.err"
        self.stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(WORKER), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=scratch,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass
        self.events.put(None)

    def event(self, name: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"worker gave no {name!r} in {timeout}s") from None
            if ev is None:
                self.proc.wait()
                raise RuntimeError(
                    f"worker ended without {name!r}: {self.stderr_path.read_text()[-2000:]}"
                )
            if ev.get("event") == name:
                return ev

    def tell(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.stderr.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Bench:
    """Shared state of one run: interpreters, scratch directory, collector."""

    def __init__(self, plan: Plan, collector_cmd: list[str], scratch: Path) -> None:
        self.plan = plan
        self.collector_cmd = collector_cmd
        self.scratch = scratch
        self.pythons: dict[str, Path] = {}
        self.raw: dict[str, Any] = {}
        self.tables: list[Table] = []
        self.targets: list[Target] = []

    def python(self, contender: str) -> Path:
        env = VENV_OF[contender]
        return Path(sys.executable) if env is None else self.pythons[env]

    def worker(self, contender: str, cfg: dict[str, Any], url: str | None = None) -> Worker:
        full = {"contender": contender, **cfg}
        if url is not None:
            full["url"] = url
        return Worker(self.python(contender), full, self.scratch)

    @contextmanager
    def endpoint(self, contender: str, measure_gzip: bool = False) -> Iterator[Endpoint]:
        """A fresh collector (or OTLP sink) for one run of ``contender``."""
        kind = BUILDERS[contender][1]
        if kind is None:
            yield Endpoint(None, lambda: 0, lambda: 0.0, lambda: 0.0)
        elif kind == "otlp":
            with OtlpSink(self.pythons["otel"], measure_gzip) as sink:
                last: dict[str, Any] = {}

                def count() -> int:
                    last.update(sink.stats())
                    return int(last["records"])

                yield Endpoint(
                    sink.url,
                    count,
                    lambda: float(last.get("cpu_s", 0.0)),
                    lambda: float(last.get("last_store", 0.0)),
                    sink,
                )
        else:
            out = self.scratch / f"collect-{uuid.uuid4().hex[:8]}"
            with Collector(self.collector_cmd, out) as collector:
                counter: RecordCounter = collector.stored(SOURCE)
                yield Endpoint(
                    collector.url,
                    counter.poll,
                    collector.cpu,
                    lambda: counter.changed_at,
                )
            shutil.rmtree(out, ignore_errors=True)


@dataclass
class Endpoint:
    """Where a contender sends, and how to read what arrived there."""

    url: str | None
    count: Callable[[], int]
    cpu: Callable[[], float]
    last_store: Callable[[], float]
    sink: OtlpSink | None = None


def wait_stored(ep: Endpoint, expected: int, settle: float, limit: float = 60) -> int:
    """Polls until ``expected`` records were stored, or the count has not
    moved for ``settle`` seconds; returns the count."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = ep.count()
        if n >= expected:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > settle:
            return n
        time.sleep(0.02)
    return ep.count()


def dropped_in(stats: dict[str, Any]) -> str:
    if "dropped" in stats:
        return str(stats["dropped"])
    return "-"


# --- workloads ---------------------------------------------------------------


def w_app(b: Bench) -> None:
    """1. App-thread cost against the floor, same process, ABBA reps."""
    p = b.plan
    table = Table(
        "1. App-thread cost of one logging call (µs/call; ratio to the floor, pair by pair)",
        [
            "contender",
            "µs/call",
            "floor µs/call",
            "ratio to floor",
            "logged",
            "received",
            "drops",
        ],
        notes=[
            f"`logger.info('Order %s placed', i, extra={{'order': {{...5 keys...}}}})`, "
            f"{p.app_reps} reps of {p.app_calls} calls per arm; the floor logger (NullHandler) and "
            "the contender's alternate in one process (ABBA); each contender rep is followed "
            "by its flush, outside the timing. Drops = logged - received by the collector/sink.",
        ],
    )
    raw: dict[str, Any] = {}
    for name in p.app_contenders:
        with b.endpoint(name) as ep:
            w = b.worker(
                name, {"workload": "app", "reps": p.app_reps, "calls": p.app_calls}, ep.url
            )
            res = w.event("result")
            w.event("closed")
            w.finish()
            received = wait_stored(ep, res["logged"], settle=1.5)
        r = ratios(res["contender_us"], res["floor_us"])
        drops = res["logged"] - received
        raw[name] = {**res, "received": received, "ratios": r}
        table.add(
            LABEL[name],
            spread(res["contender_us"]),
            spread(res["floor_us"]),
            spread(r, "{:.2f}x"),
            res["logged"],
            received,
            drops,
        )
        if name.startswith("timber") and name != "timber-2.1.0":
            b.targets.append(
                Target(
                    "1 app-thread",
                    f"{LABEL[name]}: ≤ 1.5x floor, zero drops",
                    median(r) <= 1.5 and drops == 0,
                    f"{median(r):.2f}x, {drops} drops",
                )
            )
    b.raw["app"] = raw
    b.tables.append(table)


def w_e2e(b: Bench) -> None:
    """2. End to end: N records as fast as possible, then close; delivered,
    time to the last stored record, CPU, peak RSS. Reps interleave the
    contenders so each rep pairs with the floor's rep of the same round."""
    p = b.plan
    n = p.e2e_records
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in p.e2e_contenders}
    for _ in range(p.e2e_reps):
        for name in p.e2e_contenders:
            with b.endpoint(name) as ep:
                cpu_before = ep.cpu()
                w = b.worker(name, {"workload": "e2e", "records": n}, ep.url)
                logged = w.event("logged", timeout=600)
                if ep.url is None:
                    stored, t_last = 0, logged["t_closed"]
                else:
                    stored = wait_stored(ep, n, settle=1.5)
                    t_last = ep.last_store() if stored else logged["t_closed"]
                w.tell()
                res = w.event("result")
                w.finish()
                runs[name].append(
                    {
                        **logged,
                        **res,
                        "stored": stored,
                        "calls_s": logged["t_logged"] - logged["t0"],
                        "until_stored_s": t_last - logged["t0"],
                        "endpoint_cpu_s": ep.cpu() - cpu_before,
                        "sink": ep.sink.stats() if ep.sink else None,
                    }
                )
    floor = runs["floor"]
    table = Table(
        f"2. End to end: {n:,} records as fast as possible, default settings, then close",
        [
            "contender",
            "calls (s)",
            "delivered",
            "delivered rec/s",
            "last stored at (s)",
            "÷ floor's calls time",
            "CPU (s)",
            "÷ floor's CPU",
            "peak RSS (MiB)",
            "receiver CPU (s)",
        ],
        notes=[
            f"{p.e2e_reps} rep(s); each rep runs every contender once, in turn, and ratios pair "
            "it with the floor's run of the same rep. *Last stored at*: seconds from the first "
            "call until the collector (or OTLP sink) stored the last record it got. CPU: user+system "
            "of the logging process (all threads) from the first call to the end. Receiver CPU: "
            "the collector's (or the OTLP sink's) over the same run.",
        ],
    )
    for name in p.e2e_contenders:
        rs = runs[name]
        calls = [r["calls_s"] for r in rs]
        cpu = [r["cpu_s"] for r in rs]
        rss = [r["peak_rss_mib"] for r in rs]
        if name == "floor":
            table.add(
                LABEL[name],
                spread(calls),
                "-",
                "-",
                "-",
                "1.00x",
                spread(cpu),
                "1.00x",
                spread(rss, "{:.0f}"),
                "-",
            )
            continue
        stored = [r["stored"] for r in rs]
        until = [r["until_stored_s"] for r in rs]
        rate = [s / u if u > 0 else 0.0 for s, u in zip(stored, until, strict=True)]
        t_ratio = ratios(until, [f["calls_s"] for f in floor])
        c_ratio = ratios(cpu, [f["cpu_s"] for f in floor])
        recv_cpu = [r["endpoint_cpu_s"] for r in rs]
        pct = [100 * s / n for s in stored]
        table.add(
            LABEL[name],
            spread(calls),
            f"{spread(pct, '{:.1f}')} %",
            spread(rate, "{:,.0f}"),
            spread(until),
            spread(t_ratio, "{:.2f}x"),
            spread(cpu),
            spread(c_ratio, "{:.2f}x"),
            spread(rss, "{:.0f}"),
            spread(recv_cpu),
        )
        if name in ("timber", "timber-otlp"):
            b.targets += [
                Target(
                    "2 end to end", f"{name}: 100% delivered", min(pct) >= 100, f"{min(pct):.1f} %"
                ),
                Target(
                    "2 end to end",
                    f"{name}: last record stored within 1.5x the floor's calls time",
                    median(t_ratio) <= 1.5,
                    f"{median(t_ratio):.2f}x",
                ),
            ]
        if name == "timber":
            b.targets += [
                Target(
                    "2 end to end",
                    "timber: CPU under 2x the floor's",
                    median(c_ratio) < 2,
                    f"{median(c_ratio):.2f}x",
                ),
            ]
    sink_runs = [r["sink"] for r in runs.get("otel", []) if r.get("sink")]
    if sink_runs:
        s = sink_runs[-1]
        table.notes.append(
            f"OTLP sink (last rep): {s['requests']} requests, median handling "
            f"{s['handle_ms_median']:.2f} ms (max {s['handle_ms_max']:.1f} ms), "
            f"{s['cpu_s']:.2f} s CPU in all: not the bottleneck."
        )
    b.raw["e2e"] = runs
    b.tables.append(table)


def w_format(b: Bench) -> None:
    """3. Formatters to /dev/null, ratio to the floor in the same process."""
    p = b.plan
    table = Table(
        "3. JSON formatting to /dev/null (StreamHandler)",
        ["formatter", "µs/call", "floor µs/call", "ratio to floor"],
        notes=[
            f"Same call as workload 1, {p.format_reps} reps of {p.format_calls} calls per arm, "
            "floor and formatter alternating in one process. python-json-logger is given "
            "`%(asctime)s %(levelname)s %(name)s %(message)s` (extras are added by default), "
            "near what a timber frame holds.",
        ],
    )
    raw = {}
    for name in ["stream", "stream-json", "stream-timber"]:
        w = b.worker(name, {"workload": "app", "reps": p.format_reps, "calls": p.format_calls})
        res = w.event("result")
        w.finish()
        r = ratios(res["contender_us"], res["floor_us"])
        raw[name] = {**res, "ratios": r}
        table.add(
            LABEL[name], spread(res["contender_us"]), spread(res["floor_us"]), spread(r, "{:.2f}x")
        )
        if name == "stream-timber":
            b.targets.append(
                Target(
                    "3 formatter",
                    "timber.TimberFormatter: ≤ 1.5x floor",
                    median(r) <= 1.5,
                    f"{median(r):.2f}x",
                )
            )
    b.raw["format"] = raw
    b.tables.append(table)


def timber_compressions() -> list[tuple[str, dict[str, Any]]]:
    """``(label, options)`` for each value of TimberHandler's ``compression``
    parameter, the default first; one plain entry if it has none."""
    import timber

    param = inspect.signature(timber.TimberHandler).parameters.get("compression")
    if param is None:
        return [("", {})]
    found: list[tuple[str, dict[str, Any]]] = [(f" (compression={param.default!r}, default)", {})]
    for value in ["none", "gzip", "deflate", "zstd"]:
        if value == param.default:
            continue
        try:
            timber.TimberHandler(
                api_key="x", source_id="x", host="http://127.0.0.1:9", compression=value
            ).close()
        except (TypeError, ValueError):
            continue
        found.append((f" compression={value!r}", {"compression": value}))
    return found


def w_bytes(b: Bench) -> None:
    """4. Bytes on the wire per record, by request bodies at a counting proxy
    (or at the OTLP sink)."""
    p = b.plan
    n = p.bytes_records
    table = Table(
        "4. Bytes on the wire per record (request bodies)",
        ["contender", "body encoding", "received", "bytes/record on the wire", "if gzip -6"],
        notes=[
            f"{n:,} records, default settings, logged in chunks of one batch (1,000; 512 for "
            "OpenTelemetry) each flushed; the same call as workload 1 with 16 random hex digits "
            "in `note`, so that records differ beyond their id and time. Bodies counted at a proxy in front of the collector "
            "(at the sink for OTLP); *if gzip -6*: the same bodies gzipped, for scale.",
        ],
    )
    raw: dict[str, Any] = {}
    logtail_wire = None
    variants: list[tuple[str, str, dict[str, Any]]] = []
    for name in p.bytes_contenders:
        if name == "timber":
            variants += [(name, LABEL[name] + s, o) for s, o in timber_compressions()]
        else:
            variants.append((name, LABEL[name], {}))
    for name, label, options in variants:
        chunk = 512 if name == "otel" else 1000
        cfg = {"workload": "bytes", "records": n, "chunk": chunk, "options": options}
        with b.endpoint(name, measure_gzip=True) as ep:
            if ep.sink is not None:
                w = b.worker(name, cfg, ep.url)
                res = w.event("result")
                w.finish()
                received = wait_stored(ep, n, settle=1.0)
                s = ep.sink.stats()
                wire, squeezed, enc = s["bytes"], s["gzip_bytes"], "protobuf"
            else:
                assert ep.url is not None
                with CountingProxy(ep.url) as proxy:
                    w = b.worker(name, cfg, proxy.url)
                    res = w.event("result")
                    w.finish()
                    received = wait_stored(ep, n, settle=2.0)
                    wire = proxy.wire_bytes
                    squeezed = 0 if proxy.undecoded else proxy.gzip_bytes
                    enc = "msgpack, " + "/".join(sorted(proxy.encodings))
        per = wire / received if received else float("nan")
        per_gz = squeezed / received if received else float("nan")
        raw[label] = {**res, "received": received, "wire": wire, "gzip": squeezed}
        if name == "timber" and "bytes_sent" in res["stats"] and received:
            raw[label]["stats_bytes_per_record"] = res["stats"]["bytes_sent"] / received
        if name == "logtail":
            logtail_wire = per
        table.add(label, enc, received, f"{per:.0f}", f"{per_gz:.0f}" if squeezed else "-")
    if logtail_wire:
        # The target is for the default settings; other values are shown above.
        default = variants[0][1] if variants and variants[0][0] == "timber" else None
        for label, r in raw.items():
            if label == default and r["received"]:
                per = r["wire"] / r["received"]
                b.targets.append(
                    Target(
                        "4 bytes",
                        f"{label}: ≤ half of logtail's bytes/record",
                        per <= logtail_wire / 2,
                        f"{per:.0f} vs {logtail_wire:.0f} B ({per / logtail_wire:.2f}x)",
                    )
                )
    otlp, sdk = raw.get(LABEL["timber-otlp"]), raw.get(LABEL["otel"])
    if otlp and sdk and otlp["received"] and sdk["received"]:
        mine, theirs = otlp["wire"] / otlp["received"], sdk["wire"] / sdk["received"]
        b.targets.append(
            Target(
                "4 bytes",
                f"{LABEL['timber-otlp']}: ≤ the OpenTelemetry SDK's bytes/record",
                mine <= theirs,
                f"{mine:.0f} vs {theirs:.0f} B ({mine / theirs:.2f}x)",
            )
        )
    b.raw["bytes"] = raw
    b.tables.append(table)


def w_gil(b: Bench) -> None:
    """5. A CPU loop in another thread, while records ship vs while the same
    calls go to the floor."""
    p = b.plan
    table = Table(
        "5. The GIL: a pure-Python loop in another thread while records ship",
        ["contender", "loop while shipping (k iter/s)", "loop, floor (k iter/s)", "ratio"],
        notes=[
            f"The main thread logs {p.gil_records:,} records at {p.gil_rate:,.0f}/s, then flushes; "
            "a second thread runs a pure-Python loop meanwhile. Baseline: the same calls to the "
            f"floor logger (nothing ships), in the same process, alternating, {p.gil_reps} reps each.",
        ],
    )
    raw = {}
    for name in p.gil_contenders:
        with b.endpoint(name) as ep:
            cfg = {
                "workload": "gil",
                "records": p.gil_records,
                "rate": p.gil_rate,
                "reps": p.gil_reps,
            }
            w = b.worker(name, cfg, ep.url)
            res = w.event("result", timeout=600)
            w.finish()
        r = ratios(res["contender_ips"], res["floor_ips"])
        raw[name] = {**res, "ratios": r}
        k = [x / 1e3 for x in res["contender_ips"]]
        kf = [x / 1e3 for x in res["floor_ips"]]
        table.add(LABEL[name], spread(k, "{:.0f}"), spread(kf, "{:.0f}"), spread(r, "{:.0%}"))
        if name == "timber":
            b.targets.append(
                Target("5 GIL", "timber: loop keeps ≥ 90%", median(r) >= 0.9, f"{median(r):.0%}")
            )
    b.raw["gil"] = raw
    b.tables.append(table)


def w_outage(b: Bench) -> None:
    """6. Memory while the endpoint hangs; the contenders run side by side
    (they mostly sleep)."""
    p = b.plan
    budget = 64
    table = Table(
        f"6. Memory under a {p.outage_seconds:.0f} s outage at {p.outage_rate:,.0f} records/s",
        ["contender", "logged", "RSS at start (MiB)", "peak RSS (MiB)", "handler's own counters"],
        notes=[
            "The endpoint accepts connections and never answers. Target for timber: peak RSS "
            f"≤ the documented buffer budget (max_buffer_bytes, {budget} MiB) + 20 MiB.",
        ],
    )
    raw = {}
    with HangingSink() as sink:
        cfg = {"workload": "outage", "rate": p.outage_rate, "seconds": p.outage_seconds}
        workers = {name: b.worker(name, cfg, sink.url) for name in p.outage_contenders}
        for name, w in workers.items():
            res = w.event("result", timeout=p.outage_seconds * 4 + 60)
            w.finish()
            raw[name] = res
            st = res["stats"]
            keep = ("buffered_records", "buffered_bytes", "dropped", "accepted", "sent")
            counters = ", ".join(f"{k}={st[k]}" for k in keep if k in st) or "-"
            table.add(
                LABEL[name],
                res["logged"],
                f"{res['rss_start_mib']:.0f}",
                f"{res['peak_rss_mib']:.0f}",
                counters,
            )
            if name == "timber":
                b.targets.append(
                    Target(
                        "6 outage",
                        f"timber: peak RSS ≤ {budget} + 20 MiB",
                        res["peak_rss_mib"] <= budget + 20,
                        f"{res['peak_rss_mib']:.0f} MiB",
                    )
                )
    b.raw["outage"] = raw
    b.tables.append(table)


def w_scale(b: Bench) -> None:
    """7. timber's cost per call as the extra grows and as threads grow."""
    p = b.plan
    raw: dict[str, Any] = {}
    for axis, values in (("extra_bytes", p.scale_sizes), ("threads", p.scale_threads)):
        if axis == "extra_bytes":
            title = "7a. Scale: size of `extra` (timber vs floor)"
            head = "extra (JSON bytes)"
        else:
            title = (
                "7b. Scale: logging threads (timber vs floor; µs per call, all threads together)"
            )
            head = "threads"
        table = Table(title, [head, "timber µs/call", "floor µs/call", "ratio"])
        for v in values:
            calls = p.scale_calls if axis == "extra_bytes" else max(200, p.scale_calls // v)
            cfg = {"workload": "app", "reps": p.scale_reps, "calls": calls, axis: v}
            with b.endpoint("timber") as ep:
                w = b.worker("timber", cfg, ep.url)
                res = w.event("result")
                w.event("closed")
                w.finish()
            r = ratios(res["contender_us"], res["floor_us"])
            raw[f"{axis}={v}"] = {**res, "ratios": r}
            table.add(
                f"{v:,}", spread(res["contender_us"]), spread(res["floor_us"]), spread(r, "{:.2f}x")
            )
        table.notes.append(f"{p.scale_reps} reps per arm, alternating, as in workload 1.")
        b.tables.append(table)
    b.raw["scale"] = raw


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "app": w_app,
    "e2e": w_e2e,
    "format": w_format,
    "bytes": w_bytes,
    "gil": w_gil,
    "outage": w_outage,
    "scale": w_scale,
}


# --- the run -----------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=BENCH,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    try:
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "crates", "python"], cwd=BENCH, check=False
        ).returncode
    except OSError:
        dirty = 0
    if commit and dirty:
        commit += " with uncommitted changes to crates/ or python/"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit or "?",
    }


def collector_command(binary: str | None) -> list[str]:
    if binary:
        return [binary]
    return [sys.executable, "-m", "timber", "collect"]


def header(b: Bench, info: dict[str, str], quick: bool, seconds: float) -> str:
    import timber

    versions = {"timber (this project)": timber.__version__}
    for env, pkgs in (
        ("timber-2.1.0", ["timber"]),
        ("logtail", ["logtail-python"]),
        ("otel", ["opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"]),
        ("json-logger", ["python-json-logger"]),
    ):
        if env in b.pythons:
            for pkg, v in envs.versions(b.pythons[env], pkgs).items():
                versions[pkg if env != "timber-2.1.0" else "timber (PyPI)"] = v
    lines = [
        "# timber benchmark" + (" (quick)" if quick else ""),
        "",
        f"- date: {info['date']}; commit {info['commit']}; took {seconds:.0f} s",
        f"- machine: {info['nproc']} CPUs, {info['cpu']}; {info['platform']}",
        f"- Python {info['python']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- receiver: "
        + " ".join(Path(c).name for c in b.collector_cmd[:1])
        + " "
        + " ".join(b.collector_cmd[1:])
        + " on 127.0.0.1 (OpenTelemetry: bench/otlp_sink.py)",
        "- each figure: median (min-max) over the reps; ratios pair by pair within the run",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reps and records")
    parser.add_argument("--only", help=f"comma-separated workloads: {','.join(WORKLOADS)}")
    parser.add_argument(
        "--collector", metavar="PATH", help="a timber-collector binary instead of timber collect"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    chosen = args.only.split(",") if args.only else WORKLOADS
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")

    started = time.monotonic()
    RESULTS.mkdir(exist_ok=True)
    scratch = RESULTS / "tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    b = Bench(plan, collector_command(args.collector), scratch)
    print("setting up the peers' virtualenvs (cached in bench/.venvs) ...", flush=True)
    b.pythons = envs.ensure_all(list(envs.ENVS))
    with ExitStack():
        for name in chosen:
            t0 = time.monotonic()
            print(f"workload {name} ...", end=" ", flush=True)
            RUNNERS[name](b)
            print(f"{time.monotonic() - t0:.0f} s", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)

    took = time.monotonic() - started
    info = machine()
    text = header(b, info, args.quick, took) + "\n"
    text += targets_table(b.targets).markdown() + "\n"
    text += "\n".join(t.markdown() for t in b.tables)
    print()
    print(text)
    stem = "latest-quick" if args.quick else "latest"
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"machine": info, "quick": args.quick, "raw": b.raw}, indent=1, default=str)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
