"""`timber query` as a real process against a real ClickHouse server (the
18.16 of tests/clickhouse_server.py): rows written by
`TimberHandler(destination='clickhouse', create_table=True)`, read back with
each filter and as JSON, and the refusals a person meets, each one line on
stderr with exit status 1.

That server holds the older layout (Timestamp as text, the maps as Nested);
the current one (DateTime64, Map) cannot be run here, so its SQL and the
shape of its rows are checked as pure functions at the end."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

import timber
from clickhouse_server import PASSWORD, USER, ClickHouse, free_port
from timber import _query

QUERY = [sys.executable, "-m", "timber", "query"]

#: 2020-01-02 03:04:05 UTC: the written rows are this and whole seconds after.
T0 = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()

#: Every body written, oldest first (the last one at the time of the run).
ALL = [
    "shop started",
    "billing started",
    "Order #1234 placed",
    "Invoice sent",
    "Stock low",
    "Payment failed",
    "Ledger \x1b[31mbroken\nsecond line",
    "fresh record",
]


def log(
    logger: logging.Logger,
    name: str,
    level: int,
    message: str,
    at: float,
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> None:
    """Logs a record made at `at` (seconds since the epoch) by logger `name`."""
    record = logger.makeRecord(
        name, level, __file__, 1, message, (), exc_info, func="place", extra=extra
    )
    record.created = at
    logger.handle(record)


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    server = ClickHouse(tmp_path_factory.mktemp("ch") / "server")
    try:
        write_rows(server)
        yield server
    finally:
        server.close()


def write_rows(ch: ClickHouse) -> None:
    loggers = {}
    for service in ("shop", "billing"):
        lg = logging.getLogger(f"test_query.{service}")
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        h = timber.TimberHandler(
            destination="clickhouse",
            host=ch.url,
            username=USER,
            password=PASSWORD,
            service_name=service,
            create_table=True,
        )
        lg.addHandler(h)
        # A handler learns that the server is this old from its first batch,
        # which then keeps no attributes: that batch is one plain record.
        offset = 0.5 if service == "billing" else 0.0
        log(lg, f"{service}.main", logging.DEBUG, f"{service} started", T0 - 60 + offset)
        h.flush()
        loggers[service] = (lg, h)
    shop, billing = loggers["shop"][0], loggers["billing"][0]
    with timber.context(user={"id": 123}):
        log(
            shop,
            "shop.orders",
            logging.INFO,
            "Order #1234 placed",
            T0,
            extra={"order_placed": {"id": 1234, "total": 520.23}},
        )
    log(billing, "billing.ledger", logging.INFO, "Invoice sent", T0 + 1, {"invoice": "INV-7"})
    log(shop, "shop.stock", logging.WARNING, "Stock low", T0 + 2, {"sku": "A-1", "count": 3})
    try:
        raise ValueError("card declined")
    except ValueError:
        log(shop, "shop.orders", logging.ERROR, "Payment failed", T0 + 3, exc_info=sys.exc_info())
    log(billing, "billing.ledger", logging.CRITICAL, ALL[6], T0 + 4, {"note": "it's a \\ test"})
    log(shop, "shop.orders", logging.INFO, "fresh record", time.time())
    for lg, h in loggers.values():
        h.flush()
        assert h.stats()["sent"] == h.stats()["accepted"]
        lg.removeHandler(h)
        h.close()


def query(ch: ClickHouse | None, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """Runs `timber query` against `ch` with credentials; its output lines."""
    run = run_query(ch, "--user", USER, "--password", PASSWORD, *args, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    return run.stdout.splitlines()


def run_query(
    ch: ClickHouse | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIMBER_CLICKHOUSE_")}
    target = ["--clickhouse", ch.url] if ch is not None else []
    return subprocess.run(
        [*QUERY, *target, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=base | (env or {}),
    )


def bodies(ch: ClickHouse, *args: str) -> list[str]:
    """The Body of each row printed, from `--json`."""
    return [json.loads(line)["Body"] for line in query(ch, "--json", *args)]


# --- the printed lines ---------------------------------------------------------------


def test_rows_print_as_tail_prints_frames(clickhouse: ClickHouse) -> None:
    lines = query(clickhouse)
    assert len(lines) == len(ALL)
    assert lines[0] == "[shop]  2020-01-02 03:03:05.000  DEBUG  shop.main  shop started"
    # The attributes are those logged (extras and context): not code.* or thread.*.
    assert lines[2] == (
        "[shop]  2020-01-02 03:04:05.000  INFO   shop.orders  Order #1234 placed"
        "  order_placed.id=1234  order_placed.total=520.23  user.id=123"
    )
    assert lines[3] == (
        '[billing]  2020-01-02 03:04:06.000  INFO   billing.ledger  Invoice sent  invoice="INV-7"'
    )
    assert lines[4] == (
        '[shop]  2020-01-02 03:04:07.000  WARN   shop.stock  Stock low  count=3  sku="A-1"'
    )
    assert lines[5].startswith(
        "[shop]  2020-01-02 03:04:08.000  ERROR  shop.orders  Payment failed"
        '  exception.message="card declined"  exception.stacktrace="Traceback'
    )
    assert lines[5].endswith('  exception.type="ValueError"')
    # Stored text cannot drive the terminal: control characters are escaped.
    assert lines[6] == (
        "[billing]  2020-01-02 03:04:09.000  FATAL  billing.ledger"
        '  Ledger \\x1b[31mbroken\\nsecond line  note="it\'s a \\\\ test"'
    )
    assert lines[7].startswith("[shop]  ") and lines[7].endswith(
        "  INFO   shop.orders  fresh record"
    )
    assert not any(word in line for line in lines for word in ("code.", "thread.", "\x1b"))


def test_service_filter_and_its_tail_alias(clickhouse: ClickHouse) -> None:
    billing = query(clickhouse, "--service", "billing")
    # One service: no [service] label, as tail labels only several sources.
    assert billing[0] == "2020-01-02 03:03:05.500  DEBUG  billing.main  billing started"
    assert [line[:34] for line in billing[1:]] == [
        "2020-01-02 03:04:06.000  INFO   bi",
        "2020-01-02 03:04:09.000  FATAL  bi",
    ]
    assert bodies(clickhouse, "--source", "shop") == [
        "shop started",
        "Order #1234 placed",
        "Stock low",
        "Payment failed",
        "fresh record",
    ]
    # Quotes and backslashes go to the server as an escaped literal.
    assert query(clickhouse, "--service", "it's \\ nobody") == []


def test_level_is_that_level_and_above(clickhouse: ClickHouse) -> None:
    assert bodies(clickhouse, "--level", "warn") == ["Stock low", "Payment failed", ALL[6]]
    assert bodies(clickhouse, "--level", "ERROR") == ["Payment failed", ALL[6]]
    assert bodies(clickhouse, "--level", "critical") == [ALL[6]]
    assert bodies(clickhouse, "--level", "info") == ALL[2:]
    assert bodies(clickhouse, "--level", "debug") == ALL


def test_grep_matches_the_printed_line(clickhouse: ClickHouse) -> None:
    # In an attribute, not the body; across the level and logger; an escape as printed.
    assert bodies(clickhouse, "--grep", 'invoice="INV-7"') == ["Invoice sent"]
    assert bodies(clickhouse, "--grep", "ERROR  shop.orders") == ["Payment failed"]
    assert bodies(clickhouse, "--grep", "broken\\nsecond") == [ALL[6]]
    assert bodies(clickhouse, "--grep", "Broken") == []  # case-sensitive
    # --limit counts matching rows: the newest that match, not the newest read.
    assert bodies(clickhouse, "--grep", "shop.orders", "--limit", "2") == [
        "Payment failed",
        "fresh record",
    ]


def test_since_and_until(clickhouse: ClickHouse) -> None:
    # --since is inclusive, --until exclusive; a time without a zone is UTC.
    assert bodies(
        clickhouse, "--since", "2020-01-02 03:04:06", "--until", "2020-01-02T03:04:08Z"
    ) == [
        "Invoice sent",
        "Stock low",
    ]
    assert bodies(clickhouse, "--since", "2020-01-02T04:04:08+01:00") == ALL[5:]
    assert bodies(clickhouse, "--until", "2020-01-02T03:04:05.5") == ALL[:3]
    assert bodies(clickhouse, "--since", "10m") == ["fresh record"]
    assert bodies(clickhouse, "--until", "10m") == ALL[:-1]
    assert bodies(clickhouse, "--since", "2020-01-03") == ["fresh record"]


def test_limit_prints_the_newest_oldest_first(clickhouse: ClickHouse) -> None:
    assert bodies(clickhouse, "--limit", "3") == ALL[-3:]
    lines = query(clickhouse, "--limit", "2", "--level", "warn", "--until", "1h")
    assert len(lines) == 2
    assert lines[0].startswith("[shop]  2020-01-02 03:04:08.000  ERROR  shop.orders  Payment")
    assert lines[1].startswith("[billing]  2020-01-02 03:04:09.000  FATAL  billing.ledger  Led")
    assert bodies(clickhouse, "--limit", "1000") == ALL


def test_json_gives_each_row_with_its_maps_as_objects(clickhouse: ClickHouse) -> None:
    lines = query(
        clickhouse, "--json", "--since", "2020-01-02T03:04", "--until", "2020-01-02 03:04:09"
    )
    rows = [json.loads(line) for line in lines]
    assert [r["Body"] for r in rows] == ALL[2:6]
    order = rows[0]
    assert order["Timestamp"] == "2020-01-02 03:04:05.000000000Z"
    assert (order["SeverityText"], order["SeverityNumber"], order["ServiceName"]) == (
        "INFO",
        9,
        "shop",
    )
    assert order["ScopeName"] == "shop.orders"
    # Nested's two arrays become the object a Map column gives.
    assert not any(k.endswith((".key", ".value")) for k in order)
    attrs = order["LogAttributes"]
    assert (attrs["order_placed.id"], attrs["order_placed.total"], attrs["user.id"]) == (
        "1234",
        "520.23",
        "123",
    )
    assert attrs["code.function.name"] == "place"
    assert order["ResourceAttributes"]["service.name"] == "shop"
    assert rows[3]["LogAttributes"]["exception.type"] == "ValueError"
    assert list(order) == list(rows[3])  # the table's column order, the maps in place
    # Control characters are JSON escapes: the line is safe, the value unchanged.
    ledger = query(clickhouse, "--json", "--level", "critical")
    assert "\x1b" not in ledger[0] and "\n" not in ledger[0]
    assert json.loads(ledger[0])["Body"] == ALL[6]


def test_credentials_from_the_handlers_environment_variables(clickhouse: ClickHouse) -> None:
    env = {"TIMBER_CLICKHOUSE_USER": USER, "TIMBER_CLICKHOUSE_PASSWORD": PASSWORD}
    run = run_query(clickhouse, "--limit", "1", env=env)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.endswith("  INFO   shop.orders  fresh record\n")


# --- refusals: one line, exit status 1 -------------------------------------------------


def refused(ch: ClickHouse | None, *args: str) -> str:
    run = run_query(ch, *args)
    assert run.returncode == 1, run
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("timber query: "), run.stderr
    return run.stderr.rstrip("\n")


def test_refusals_are_one_line(clickhouse: ClickHouse) -> None:
    credentials = ("--user", USER, "--password", PASSWORD)
    wrong = refused(clickhouse, "--user", USER, "--password", "wrong")
    assert wrong.startswith("timber query: ClickHouse refused the credentials: Code: 193")
    assert "Wrong password for user writer" in wrong and "TIMBER_CLICKHOUSE_PASSWORD" in wrong
    nobody = refused(clickhouse)
    assert "ClickHouse refused the credentials" in nobody and "Unknown user default" in nobody
    missing = refused(clickhouse, *credentials, "--table", "nope")
    assert missing.startswith("timber query: ClickHouse: Code: 60")
    assert "Table default.nope doesn't exist" in missing
    no_db = refused(clickhouse, *credentials, "--table", "nodb.otel_logs")
    assert "Database nodb doesn't exist" in no_db
    port = free_port()
    assert refused(None, "--clickhouse", f"http://127.0.0.1:{port}") == (
        f"timber query: cannot reach ClickHouse at http://127.0.0.1:{port}: Connection refused"
    )
    assert refused(clickhouse, *credentials, "--since", "yesterday") == (
        "timber query: --since 'yesterday': expected a time such as 2026-11-24T10:00:00"
        " or a duration such as 10m"
    )
    assert "not a valid time" in refused(clickhouse, "--until", "2026-02-30T10:00:00")
    assert "--table must be a table name or database.table" in refused(
        clickhouse, "--table", "logs; DROP TABLE x"
    )
    assert "--clickhouse must be a URL" in refused(None, "--clickhouse", "localhost:8123")


def test_a_server_that_never_answers_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setattr(_query, "TIMEOUT", 0.2)
        with pytest.raises(_query.QueryError, match=r"did not answer within 0.2 s$"):
            _query.describe(_query.ClickHouse(url, None, None), "otel_logs")


# --- pure parts: times, and the current server's layout ---------------------------------


def test_times() -> None:
    now = 1_700_000_000 * 10**9
    assert _query.parse_time("90s", now) == now - 90 * 10**9
    assert _query.parse_time("1.5h", now) == now - 5400 * 10**9
    t = _query.parse_time("2026-11-24 10:00:00.123456789", now)
    assert _query.utc_text(t) == "2026-11-24 10:00:00.123456789"
    assert _query.parse_time("2026-11-24T11:00:00+01:00", now) == _query.parse_time(
        "2026-11-24T10:00:00", now
    )
    assert _query.utc_text(_query.parse_time("2026-11-24", now)) == "2026-11-24 00:00:00.000000000"
    assert _query.literal("a'b\\c\0") == "'a\\'b\\\\c\\0'"
    # --level: OpenTelemetry's lowest severity number of each level.
    levels = ("trace", "debug", "info", "warn", "error", "critical", "fatal")
    assert [_query.SEVERITY[name] for name in levels] == [1, 5, 9, 13, 17, 21, 21]


def test_the_current_layout_is_queried_as_datetime64_and_map() -> None:
    columns = {
        "Timestamp": "DateTime64(9)",
        "ServiceName": "LowCardinality(String)",
        "SeverityNumber": "UInt8",
        "Body": "String",
        "LogAttributes": "Map(LowCardinality(String), String)",
    }
    since = _query.parse_time("2026-11-24 10:00:00", 0)
    sql = _query.build_sql(
        "logs.otel_logs",
        columns,
        _query.Filters(service="o'k", min_severity=13, since_ns=since, limit=5),
    )
    assert sql == (
        "SELECT *, toUnixTimestamp64Nano(toDateTime64(Timestamp, 9)) AS timber_query_ns"
        " FROM logs.otel_logs WHERE ServiceName = 'o\\'k' AND SeverityNumber >= 13"
        " AND Timestamp >= toDateTime64('2026-11-24 10:00:00.000000000', 9, 'UTC')"
        " ORDER BY Timestamp DESC LIMIT 5 FORMAT JSONEachRow"
    )
    # The server writes a DateTime64 in its own zone: the text is remade in UTC.
    row = _query.normalise(
        {
            "Timestamp": "2026-11-24 11:00:00.000000001",
            "Body": "x",
            "LogAttributes": {"order.id": "7"},
            "timber_query_ns": str(since + 1),
        }
    )
    assert row == {
        "Timestamp": "2026-11-24 10:00:00.000000001",
        "Body": "x",
        "LogAttributes": {"order.id": "7"},
    }
    with pytest.raises(_query.QueryError, match="no Timestamp column"):
        _query.build_sql("t", {"Body": "String"}, _query.Filters())


# --- hostile input: userinfo, times out of range, slow and huge answers ------------------


def test_userinfo_in_the_url_is_the_credentials_and_never_shown(clickhouse: ClickHouse) -> None:
    host = clickhouse.url.removeprefix("http://")
    run = run_query(None, "--clickhouse", f"http://{USER}:{PASSWORD}@{host}", "--limit", "1")
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.endswith("fresh record\n")
    wrong = refused(None, "--clickhouse", f"http://{USER}:Mark-hunter2@{host}")
    assert "ClickHouse refused the credentials" in wrong and "Mark-hunter2" not in wrong
    bad = refused(None, "--clickhouse", f"http://{USER}:Mark-hunter2@{host}/?x=1")
    assert "--clickhouse must be a URL" in bad and "Mark-hunter2" not in bad


def test_a_time_out_of_range_is_one_line(clickhouse: ClickHouse) -> None:
    credentials = ("--user", USER, "--password", PASSWORD)
    for text in (
        "99999999999d",
        "9" * 400 + "w",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T01:00+02:00",
    ):
        said = refused(clickhouse, *credentials, "--since", text)
        assert said.startswith(f"timber query: --since {text!r}: out of range"), said


class Scripted:
    """A loopback server answering every connection with `head`, then
    `block` `repeat` times, then `trickle` bytes one at a time, a tenth of a
    second apart; it keeps the head of each request."""

    def __init__(self, head: bytes, block: bytes = b"", repeat: int = 0, trickle: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.heads: list[bytes] = []

        def answer(conn: socket.socket) -> None:
            with conn:
                self.heads.append(conn.recv(65536))
                try:
                    conn.sendall(head)
                    for _ in range(repeat):
                        conn.sendall(block)
                    for _ in range(trickle):
                        if self.stop.wait(0.1):
                            break
                        conn.sendall(b"x")
                except OSError:
                    pass

        def serve() -> None:
            # A timeout, so that the loop sees `stop` (closing the listener
            # does not end a blocked accept).
            self.listener.settimeout(0.2)
            while not self.stop.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.listener.close()


def test_a_trickling_server_is_cut_at_the_total_deadline() -> None:
    server = Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", trickle=100000)
    try:
        said = refused(None, "--clickhouse", server.url, "--timeout", "2")
    finally:
        server.close()
    assert said == f"timber query: ClickHouse at {server.url} did not answer within 2 s"


def test_a_huge_answer_line_is_refused_in_bounded_memory() -> None:
    blocks = 256
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {blocks << 20}\r\n\r\n".encode()
    server = Scripted(head, b"x" * (1 << 20), repeat=blocks)
    # The peak of this process's own memory (VmHWM: ru_maxrss would count
    # the forked copy of the test runner too).
    code = (
        "import sys\nfrom timber.cli import main\n"
        f"rc = main(['query', '--clickhouse', {server.url!r}])\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "print(int(status.split()[0]) >> 10)\nsys.exit(rc)\n"
    )
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    finally:
        server.close()
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("\n") == 1 and "longer than 32 MiB" in run.stderr, run.stderr
    # The line is 256 MiB: held whole, the process would pass that.
    peak_mib = int(run.stdout)
    assert peak_mib < 160, peak_mib


def test_a_password_is_sent_as_utf8_as_the_handler_sends_it() -> None:
    server = Scripted(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    try:
        refused(None, "--clickhouse", server.url, "--user", "üser", "--password", "pässwörd")
        h = timber.TimberHandler(
            destination="clickhouse", host=server.url, username="üser", password="pässwörd"
        )
        h.handle(logging.makeLogRecord({"msg": "m"}))
        h.flush()
        h.close()
    finally:
        server.close()
    sent = [head for head in server.heads if b"x-clickhouse-key" in head.lower()]
    assert len(sent) >= 2, server.heads
    for head in sent:
        headers = {
            k.lower(): v for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n"))
        }
        assert headers[b"x-clickhouse-key"] == "pässwörd".encode(), head
        assert headers[b"x-clickhouse-user"] == "üser".encode(), head


def test_a_servers_text_reaches_stderr_escaped() -> None:
    body = b"\x1b]0;owned\x07Code: 60. DB::Exception: \x1b[2Jgone\x9b31m"
    for head, text in [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(body), body),
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 2), b"{]" + body),
    ]:
        server = Scripted(head + text)
        try:
            said = refused(None, "--clickhouse", server.url)
        finally:
            server.close()
        assert "\x1b" not in said and "\x07" not in said and "\x9b" not in said, repr(said)
        assert "\\x1b[2Jgone" in said, repr(said)
