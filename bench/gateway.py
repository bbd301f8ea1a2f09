"""``make bench``: logging processes into one ClickHouse server, through two
``timber collect --clickhouse`` gateways and straight from the handlers
(``destination='clickhouse'``), side by side in one run.

Each logging process builds its handler, waits for the word, then logs its
records as fast as the handler takes them, in bursts of 1,000 calls with
the same burst into a ``logging.NullHandler`` logger (the floor) before
every fourth, and closes the handler. Processes are spread evenly
over the gateways. Per run: records per second from the first record
logged to the last row visible (``SELECT count()``, polled), the requests
the handlers sent, the inserts ClickHouse ran (``InsertQuery`` of
``system.events``) and their rows, the CPU of the logging processes, the
gateways and ClickHouse, and each process's µs per call beside the floor's. Configurations alternate
rep by rep, each into a fresh table; a run whose table does not hold exactly
every record is flagged, left out of the medians, and makes the exit status
1. Writes ``bench/results/gateway.md`` (``gateway-quick.md`` for
``--quick``). The server is Debian's clickhouse-server (``make setup``),
run by ``tests/clickhouse_server.py``.

    python bench/gateway.py            # 3 reps of 4 processes x 100,000 records, ~2 min
    python bench/gateway.py --quick    # 1 rep of 4 x 10,000
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

from clickhouse_server import PASSWORD, USER, ClickHouse  # noqa: E402
from report import Table, median, ratios, spread  # noqa: E402
from servers import proc_cpu_seconds  # noqa: E402

RESULTS = BENCH / "results"
#: A gateway's last line on stderr when it stops.
TOTALS = re.compile(r"(\d+) records in ClickHouse, (\d+) spooled, (\d+) dropped")
GATEWAYS = 2
BURST = 1000
#: One floor burst before every this many handler bursts.
FLOOR_EVERY = 4
CONFIGS = ("gateway", "direct")
LABEL = {
    "gateway": f"through {GATEWAYS} gateways (`timber collect --clickhouse`)",
    "direct": "straight from the handlers (`destination='clickhouse'`)",
}

# The otel_logs columns as an 18.16 server holds them (tests/clickhouse_server.py).
TABLE = (
    "CREATE TABLE {name} (Timestamp String, TraceId String, SpanId String, "
    "TraceFlags UInt32, SeverityText String, SeverityNumber Int32, ServiceName String, "
    "Body String, ResourceAttributes Nested(key String, value String), ScopeName String, "
    "LogAttributes Nested(key String, value String)) "
    "ENGINE = MergeTree() ORDER BY (ServiceName, Timestamp)"
)


@dataclass
class Plan:
    processes: int
    records: int  # per process
    reps: int


FULL = Plan(processes=4, records=100_000, reps=3)
QUICK = Plan(processes=4, records=10_000, reps=1)


# --- one logging process -------------------------------------------------------


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def burst(logger: logging.Logger, start: int, calls: int) -> tuple[float, float]:
    """Wall-clock and thread CPU µs per call over ``calls`` calls, the call
    of run.py's workload 1."""
    info = logger.info
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(start, start + calls):
        info(
            "Order %s placed",
            i,
            extra={"order": {"id": i, "sku": "AB-1234", "qty": 2, "price": 19.99, "note": ""}},
        )
    return (time.perf_counter() - t0) / calls * 1e6, (time.thread_time() - c0) / calls * 1e6


def process_cpu() -> float:
    """User plus system CPU seconds of this process, all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def app(cfg: dict[str, Any]) -> None:
    """Logs ``cfg['records']`` records once told to on stdin."""
    import timber

    n = cfg["n"]
    if cfg["config"] == "gateway":
        handler = timber.TimberHandler(api_key="bench", source_id=f"app{n}", host=cfg["url"])
    else:
        handler = timber.TimberHandler(
            destination="clickhouse",
            host=cfg["url"],
            table=cfg["table"],
            username=USER,
            password=PASSWORD,
            service_name=f"app{n}",
        )
    loggers = {}
    for name, h in (("floor", logging.NullHandler()), ("timber", handler)):
        lg = logging.getLogger(f"bench.{name}")
        lg.handlers[:] = [h]
        lg.setLevel(logging.INFO)
        lg.propagate = False
        loggers[name] = lg
    burst(loggers["floor"], 0, BURST)  # warm the interpreter's paths, not the handler
    emit(event="ready")
    sys.stdin.readline()
    cpu0 = process_cpu()
    wall: dict[str, list[float]] = {"floor": [], "timber": []}
    cpu: dict[str, list[float]] = {"floor": [], "timber": []}
    t_first = 0.0
    for k in range(cfg["records"] // BURST):
        if k % FLOOR_EVERY == 0:
            w, c = burst(loggers["floor"], k * BURST, BURST)
            wall["floor"].append(w)
            cpu["floor"].append(c)
        if k == 0:
            t_first = time.monotonic()
        w, c = burst(loggers["timber"], k * BURST, BURST)
        wall["timber"].append(w)
        cpu["timber"].append(c)
    t_logged = time.monotonic()
    handler.close()
    emit(
        event="result",
        wall=wall,
        cpu=cpu,
        t_first=t_first,
        t_logged=t_logged,
        t_closed=time.monotonic(),
        process_cpu=process_cpu() - cpu0,
        stats=handler.stats(),
    )


# --- the driver ----------------------------------------------------------------


class Process:
    """A child whose stdout is read as JSON lines."""

    def __init__(self, argv: list[str], stderr: Path) -> None:
        self.argv = argv
        self.stderr_path = stderr
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append("")
            self.cond.notify_all()

    def line(self, match: str, timeout: float = 60) -> str:
        """The first stdout line containing ``match``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if match in line:
                        return line
                if "" in self.lines or not self.cond.wait(deadline - time.monotonic()):
                    self.kill()
                    err = self.stderr_path.read_text("utf-8", "replace")[-2000:]
                    raise RuntimeError(f"no {match!r} from {self.argv[:4]}: {err}")

    def event(self, name: str, timeout: float = 120) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.line(f'"event": "{name}"', timeout))
        return result

    def tell(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> str:
        """SIGTERM, then the last line of stderr (a gateway's totals)."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        lines = self.stderr_path.read_text("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@dataclass
class Run:
    """What one run of one configuration measured."""

    config: str
    expected: int
    stored: int = 0
    seconds: float = 0.0  # first record logged to the last row visible
    requests: int = 0  # sent by the handlers
    inserts: int = 0  # InsertQuery seen by ClickHouse
    inserted_rows: int = 0
    ch_cpu: float = 0.0
    gw_cpu: float = 0.0
    app_cpu: float = 0.0  # the logging processes, every thread
    dropped: int = 0
    retries: int = 0
    gateway_totals: list[str] = field(default_factory=list)
    # Per process, the median burst's µs per call: {"wall"|"cpu": {"timber"|"floor": [...]}}
    us: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {m: {"timber": [], "floor": []} for m in ("wall", "cpu")}
    )

    def cost(self, measure: str, arm: str) -> float:
        """The median process's µs per call."""
        return median(self.us[measure][arm])

    def ratio(self, measure: str) -> float:
        """The median process's ratio of its handler's to its floor's µs/call."""
        m = self.us[measure]
        return median(ratios(m["timber"], m["floor"]))

    @property
    def complete(self) -> bool:
        return self.stored == self.expected == self.inserted_rows and self.dropped == 0


def events(ch: ClickHouse) -> dict[str, int]:
    out = ch.query("SELECT event, value FROM system.events")
    return {k: int(v) for k, v in (line.split("\t") for line in out.splitlines())}


def count(ch: ClickHouse, table: str) -> int:
    return int(ch.query(f"SELECT count() FROM {table}"))


def run_once(ch: ClickHouse, config: str, plan: Plan, table: str, scratch: Path) -> Run:
    ch.query(TABLE.format(name=table))
    expected = plan.processes * plan.records
    run = Run(config, expected)
    gateways: list[Process] = []
    urls = [ch.url] if config == "direct" else []
    if config == "gateway":
        for i in range(GATEWAYS):
            g = Process(
                [
                    sys.executable, "-m", "timber", "collect",
                    "--listen", "127.0.0.1:0", "--out", str(scratch / "out"),
                    "--clickhouse", ch.url, "--table", table,
                    "--username", USER, "--password", PASSWORD,
                ],
                scratch / f"{table}-gw{i}.err",
            )  # fmt: skip
            banner = g.line("listening on", timeout=30)
            gateways.append(g)
            match = re.search(r"http://127\.0\.0\.1:\d+", banner)
            assert match is not None, banner
            urls.append(match.group(0))
    apps = [
        Process(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--app",
                json.dumps(
                    {
                        "n": n,
                        "config": config,
                        "url": urls[n % len(urls)],
                        "table": table,
                        "records": plan.records,
                    }
                ),
            ],
            scratch / f"{table}-app{n}.err",
        )
        for n in range(plan.processes)
    ]
    for a in apps:
        a.event("ready")
    before = events(ch)
    ch_cpu = proc_cpu_seconds(ch.proc.pid)
    gw_cpu = sum(proc_cpu_seconds(g.proc.pid) for g in gateways)
    for a in apps:
        a.tell()
    # Polls until every row is visible, or the count has stood still for
    # 10 s once every process has closed its handler (the gateway waits
    # 1 s, a retry a few), or for at most 5 minutes.
    t_visible = 0.0
    last, since = -1, time.monotonic()
    deadline = since + 300
    while True:
        n = count(ch, table)
        now = time.monotonic()
        if n >= expected:
            t_visible = now
            break
        if n != last:
            last, since = n, now
        elif now - since > 10 and all(a.proc.poll() is not None for a in apps):
            break
        if now > deadline:
            for a in apps:
                a.kill()
            break
        time.sleep(0.05)
    results = [a.event("result") for a in apps]
    for a in apps:
        a.proc.wait(30)
    run.ch_cpu = proc_cpu_seconds(ch.proc.pid) - ch_cpu
    run.gw_cpu = sum(proc_cpu_seconds(g.proc.pid) for g in gateways) - gw_cpu
    run.gateway_totals = [g.stop() for g in gateways]
    time.sleep(0.5)  # anything a stopping gateway still inserts is counted too
    run.stored = count(ch, table)
    final = events(ch)
    run.inserts = final.get("InsertQuery", 0) - before.get("InsertQuery", 0)
    run.inserted_rows = final.get("InsertedRows", 0) - before.get("InsertedRows", 0)
    t_first = min(r["t_first"] for r in results)
    run.seconds = (t_visible or time.monotonic()) - t_first
    for r in results:
        st = r["stats"]
        run.requests += st["batches_sent"]
        run.app_cpu += r["process_cpu"]
        run.dropped += st["dropped"]
        run.retries += st["retries"]
        for measure in ("wall", "cpu"):
            for arm in ("timber", "floor"):
                run.us[measure][arm].append(median(r[measure][arm]))
    ch.query(f"DROP TABLE {table}")
    return run


def gateway_totals(runs: list[Run]) -> str:
    """The gateways' own last words, added up over the runs."""
    lines = [t for r in runs for t in r.gateway_totals]
    found = [TOTALS.search(t) for t in lines]
    if not lines or not all(found):
        return "Gateways' last lines at exit: " + "; ".join(lines)
    stored, spooled, dropped = (sum(int(m[k]) for m in found if m) for k in (1, 2, 3))
    return (
        f"The gateways' own totals at exit, over {len(lines)} gateway runs: {stored:,} records "
        f"in ClickHouse, {spooled:,} spooled, {dropped:,} dropped."
    )


def report(plan: Plan, runs: dict[str, list[Run]], took: float, quick: bool) -> str:
    total = plan.processes * plan.records
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
    ).stdout.strip()
    lines = [
        "# Into ClickHouse: through gateways, and straight from the handlers"
        + (" (quick)" if quick else ""),
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"commit {commit or '?'}; took {took:.0f} s",
        f"- machine: {os.cpu_count()} CPUs; {platform.platform()}; Python {platform.python_version()}",
        "- ClickHouse: Debian's clickhouse-server 18.16, one server on 127.0.0.1, "
        "a fresh MergeTree table per run",
        f"- {plan.processes} logging processes x {plan.records:,} records = {total:,} per run, "
        f"logged as fast as the handler takes them (default handler settings); "
        f"through gateways, processes spread evenly over {GATEWAYS} gateways",
        f"- {plan.reps} rep(s) per configuration, alternating; each figure: median (min-max) "
        "over the complete runs",
        "",
    ]
    bad = [r for rs in runs.values() for r in rs if not r.complete]
    if bad:
        lines.append("**INCOMPLETE runs, left out of the medians:**")
        lines.append("")
        for r in bad:
            lines.append(
                f"- {r.config}: {r.stored:,} rows of {r.expected:,} visible, "
                f"{r.inserted_rows:,} inserted, {r.dropped} dropped by the handlers"
                + "".join(f"; {t}" for t in r.gateway_totals)
            )
        lines.append("")
    else:
        n_runs = sum(len(rs) for rs in runs.values())
        lines += [
            f"Every run stored every record: {n_runs} runs, each table holding exactly "
            f"{total:,} rows, as many as ClickHouse counted inserted, none dropped.",
            "",
        ]

    e2e = Table(
        "End to end",
        [
            "configuration",
            "records/s end to end",
            "seconds",
            "handler requests/s",
            "ClickHouse inserts/s",
            "rows per insert",
            "logging processes' CPU (s)",
            "gateways' CPU (s)",
            "ClickHouse CPU (s)",
            "complete runs",
        ],
        notes=[
            "*End to end*: from the first record logged to the last row visible to "
            "`SELECT count()` (polled every 50 ms); the logging processes also make the floor's "
            "calls (a fifth of all calls, below), and a gateway inserts a batch 1 s after its "
            "first record at the latest, which the last batch waits for. *Handler requests*: batches the "
            "handlers sent (to the gateways, or as inserts). *Inserts*: `InsertQuery` "
            "of `system.events`, counted over the run; rows per insert: `InsertedRows` "
            "over it. CPU: user+system over the run (the logging processes' with their sender threads, from `getrusage`; the servers' from /proc).",
        ],
    )
    cost = Table(
        "App-thread cost of one logging call (µs/call; ratio to the floor in the same process)",
        [
            "configuration",
            "µs/call",
            "floor µs/call",
            "ratio to floor",
            "CPU µs/call",
            "floor CPU µs/call",
            "CPU ratio to floor",
        ],
        notes=[
            f"Each process logs in bursts of {BURST:,} calls to its TimberHandler logger, with "
            f"a burst of the same calls to a `logging.NullHandler` logger (the floor) before "
            f"every {FLOOR_EVERY}th, while all the processes, the gateways and ClickHouse share "
            "the machine. *µs/call*: wall clock, what the application waits, inflated alike in "
            "both arms by the processes taking turns on the CPUs; *CPU µs/call*: the logging "
            "thread's own CPU time (`time.thread_time`). Per process the median burst and the "
            "ratio of the medians; per run the median process; then median (min-max) over runs.",
        ],
    )
    for config in CONFIGS:
        ok = [r for r in runs[config] if r.complete]
        if not ok:
            e2e.add(LABEL[config], *["-"] * 8, f"0 of {len(runs[config])}")
            cost.add(LABEL[config], *["-"] * 6)
            continue
        secs = [r.seconds for r in ok]
        e2e.add(
            LABEL[config],
            spread([r.stored / r.seconds for r in ok], "{:,.0f}"),
            spread(secs),
            spread([r.requests / r.seconds for r in ok], "{:,.0f}"),
            spread([r.inserts / r.seconds for r in ok], "{:,.1f}"),
            spread([r.inserted_rows / r.inserts for r in ok], "{:,.0f}"),
            spread([r.app_cpu for r in ok]),
            spread([r.gw_cpu for r in ok]) if config == "gateway" else "-",
            spread([r.ch_cpu for r in ok]),
            f"{len(ok)} of {len(runs[config])}",
        )
        cost.add(
            LABEL[config],
            *(
                cell
                for measure in ("wall", "cpu")
                for cell in (
                    spread([r.cost(measure, "timber") for r in ok]),
                    spread([r.cost(measure, "floor") for r in ok]),
                    spread([r.ratio(measure) for r in ok], "{:.2f}x"),
                )
            ),
        )
    retries = ", ".join(f"{c} {sum(r.retries for r in runs[c])}" for c in CONFIGS)
    e2e.notes += [
        "",
        f"Handler retries over all runs: {retries}. {gateway_totals(runs['gateway'])}",
    ]
    return "\n".join(lines) + "\n" + e2e.markdown() + "\n" + cost.markdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 rep of fewer records")
    parser.add_argument("--app", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.app:
        app(json.loads(args.app))
        return 0
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    runs: dict[str, list[Run]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="timber-gwbench-") as tmp:
        scratch = Path(tmp)
        ch = ClickHouse(scratch / "clickhouse")
        try:
            for rep in range(plan.reps):
                order = CONFIGS if rep % 2 == 0 else CONFIGS[::-1]
                for config in order:
                    print(f"rep {rep + 1}, {config} ...", end=" ", flush=True)
                    r = run_once(ch, config, plan, f"{config}_{rep}", scratch)
                    runs[config].append(r)
                    verdict = "all stored" if r.complete else "INCOMPLETE"
                    print(
                        f"{r.stored:,}/{r.expected:,} rows ({verdict}) in {r.seconds:.2f} s, "
                        f"{r.inserts} inserts",
                        flush=True,
                    )
        finally:
            ch.close()
    text = report(plan, runs, time.monotonic() - started, args.quick)
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("gateway-quick.md" if args.quick else "gateway.md")).write_text(text)
    return 0 if all(r.complete for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
