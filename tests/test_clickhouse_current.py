"""destination='clickhouse' against a current ClickHouse engine: chdb (the
`chdb-core` package) behind a small HTTP front of ours (chdb_server.py), run
as a separate process on a free loopback port.

What the packaged 18.16 server of test_clickhouse.py cannot show is shown
here on the real engine: the otel_logs DDL of create_table_sql (DateTime64(9),
Map, LowCardinality, non_replicated_deduplication_window), rows with real
maps, and a batch retried after a lost answer stored once through
insert_deduplication_token."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

import timber
from chdb_server import PASSWORD, USER, ChdbServer
from clickhouse_server import handler as clickhouse_handler
from conftest import Collector

# create_table_sql's layout for a server >= 22.3, as the engine reports it.
OTEL_LOGS = [
    ("Timestamp", "DateTime64(9)"),
    ("TimestampTime", "DateTime"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("TraceFlags", "UInt8"),
    ("SeverityText", "LowCardinality(String)"),
    ("SeverityNumber", "UInt8"),
    ("ServiceName", "LowCardinality(String)"),
    ("Body", "String"),
    ("ResourceSchemaUrl", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeSchemaUrl", "LowCardinality(String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "LowCardinality(String)"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"),
    ("LogAttributes", "Map(LowCardinality(String), String)"),
]


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbServer]:
    # A server outside UTC: rows must still hold the instant logged.
    server = ChdbServer(tmp_path_factory.mktemp("chdb"), timezone="Asia/Tokyo")
    yield server
    server.close()


def handler(ch: ChdbServer, table: str, **kw: Any) -> timber.TimberHandler:
    return clickhouse_handler(ch.url, table, **kw)


def inserts(ch: ChdbServer, table: str) -> list[dict[str, Any]]:
    """The front's record of the inserts into `table`, in order."""
    return [e for e in ch.log() if e["query"].startswith(f"INSERT INTO {table} ")]


class Keep(logging.Handler):
    """Keeps the records, to compare the rows with."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_create_table_makes_the_otel_logs_layout(chdb: ChdbServer, logger: logging.Logger) -> None:
    assert int(chdb.version.split(".")[0]) >= 23, chdb.version
    h = handler(chdb, "made", create_table=True)
    logger.addHandler(h)
    logger.info("into a table that did not exist")
    h.flush()
    s = h.stats()
    assert (s["sent"], s["failed_attempts"], s["retries"]) == (1, 0, 0)
    # The table's layout asked for before the first insert: missing, so
    # the version asked, the table created and its layout read; then the
    # insert, naming the columns read: all within one attempt.
    steps = [(e["query"].split(" (")[0], e["status"], e.get("code")) for e in chdb.log()]
    assert steps[-5:] == [
        ("DESCRIBE TABLE made", 404, 60),
        ("SELECT version()", 200, None),
        ("CREATE TABLE IF NOT EXISTS made", 200, None),
        ("DESCRIBE TABLE made", 200, None),
        ("INSERT INTO made", 200, None),
    ]
    assert chdb.log()[-1]["query"].startswith(
        "INSERT INTO made (`Timestamp`, `TraceId`, `SpanId`, `TraceFlags`, `SeverityText`,"
    )
    columns = chdb.rows(
        "SELECT name, type FROM system.columns"
        " WHERE database = currentDatabase() AND table = 'made' ORDER BY position"
    )
    assert [(c["name"], c["type"]) for c in columns] == OTEL_LOGS
    (table,) = chdb.rows(
        "SELECT engine, partition_key, primary_key, sorting_key, engine_full FROM system.tables"
        " WHERE database = currentDatabase() AND name = 'made'"
    )
    assert table["engine"] == "MergeTree"
    assert table["partition_key"] == "toDate(TimestampTime)"
    assert table["primary_key"] == "ServiceName, TimestampTime"
    assert table["sorting_key"] == "ServiceName, TimestampTime, Timestamp"
    assert "non_replicated_deduplication_window = 1000" in table["engine_full"]
    (row,) = chdb.rows("SELECT Body, TimestampTime = toDateTime(Timestamp) AS same FROM made")
    assert row == {"Body": "into a table that did not exist", "same": True}
    h.close()


def test_records_arrive_as_otel_logs_rows(chdb: ChdbServer, logger: logging.Logger) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    keep = Keep()
    logger.addHandler(keep)
    h = handler(chdb, "rows", create_table=True, compression="gzip")
    logger.addHandler(h)
    with timber.context(user={"id": 5}):
        logger.info("Order placed", extra={"order": {"id": 1234, "total": 520.23}})
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        logger.warning("in a span")
        ctx = span.get_span_context()
    try:
        raise ValueError("bad total")
    except ValueError:
        logger.exception("failed")
    h.flush()
    assert h.stats()["sent"] == 3
    assert [e["encoding"] for e in inserts(chdb, "rows") if e["status"] == 200] == ["gzip"]
    rows = {
        r["Body"]: r
        for r in chdb.rows(
            "SELECT *, toUnixTimestamp64Nano(Timestamp) AS ns,"
            " toUnixTimestamp(TimestampTime) AS seconds FROM rows"
        )
    }
    assert set(rows) == {"Order placed", "in a span", "failed"}
    records = {r.getMessage(): r for r in keep.records}
    for body, row in rows.items():
        record = records[body]
        # Nanoseconds as the handler computes them: int(created * 1e9),
        # truncated, kept whole by DateTime64(9).
        assert row["ns"] == int(record.created * 1e9)
        assert row["seconds"] == int(record.created)
        assert row["ServiceName"] == "shop"
        assert row["ScopeName"] == logger.name
        assert row["ResourceAttributes"] == {
            "service.name": "shop",
            "host.name": socket.gethostname(),
            "process.pid": str(os.getpid()),
        }
        attrs = row["LogAttributes"]
        assert attrs["code.file.path"] == record.pathname
        assert attrs["code.function.name"] == "test_records_arrive_as_otel_logs_rows"
        assert attrs["code.line.number"] == str(record.lineno)
        assert attrs["thread.id"] == str(record.thread)
        assert attrs["thread.name"] == record.threadName
    placed, spanned, failed = rows["Order placed"], rows["in a span"], rows["failed"]
    assert [(r["SeverityText"], r["SeverityNumber"]) for r in (placed, spanned, failed)] == [
        ("INFO", 9),
        ("WARN", 13),
        ("ERROR", 17),
    ]
    # Nested extras and the context as dotted keys of a real Map.
    own = {
        k: v for k, v in placed["LogAttributes"].items() if not k.startswith(("code.", "thread."))
    }
    assert own == {"order.id": "1234", "order.total": "520.23", "user.id": "5"}
    (by_key,) = chdb.rows(
        "SELECT LogAttributes['order.id'] AS id, mapContains(LogAttributes, 'user.id') AS has"
        " FROM rows WHERE Body = 'Order placed'"
    )
    assert by_key == {"id": "1234", "has": True}
    assert spanned["TraceId"] == f"{ctx.trace_id:032x}"
    assert spanned["SpanId"] == f"{ctx.span_id:016x}"
    assert spanned["TraceFlags"] == int(ctx.trace_flags)
    assert (placed["TraceId"], placed["SpanId"], placed["TraceFlags"]) == ("", "", 0)
    exc = failed["LogAttributes"]
    assert (exc["exception.type"], exc["exception.message"]) == ("ValueError", "bad total")
    assert exc["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert exc["exception.stacktrace"].rstrip().endswith("ValueError: bad total")
    assert "exception.type" not in placed["LogAttributes"]
    h.close()


def test_a_batch_whose_answer_was_lost_is_stored_once(
    chdb: ChdbServer, logger: logging.Logger
) -> None:
    # The first insert that succeeds is stored, then left unanswered past the
    # handler's timeout: the handler cannot know it arrived, and sends it again.
    chdb.lose_answers(inserts=1, hold=4)
    h = handler(chdb, "once", create_table=True, timeout=2)
    logger.addHandler(h)
    for n in range(50):
        logger.info("event %d", n, extra={"n": n})
    h.flush()
    s = h.stats()
    assert (s["sent"], s["failed_attempts"], s["retries"]) == (50, 1, 1)
    stored = [e for e in inserts(chdb, "once") if e["status"] == 200]
    assert [e["lost"] for e in stored] == [True, False]
    tokens = {e["settings"]["insert_deduplication_token"] for e in stored}
    assert len(tokens) == 1, tokens
    # Both inserts ran on the engine; the second was dropped as a duplicate.
    (count,) = chdb.rows("SELECT count() AS rows, uniqExact(LogAttributes['n']) AS ids FROM once")
    assert count == {"rows": 50, "ids": 50}
    h.close()


def test_the_token_is_what_deduplicates(chdb: ChdbServer, logger: logging.Logger) -> None:
    # By hand, on an otel_logs table the handler created, then on a plain
    # MergeTree: the same row, with the same token or another.
    h = handler(chdb, "tokens", create_table=True)
    logger.addHandler(h)
    logger.info("makes the table")
    h.flush()
    assert h.stats()["sent"] == 1
    chdb.query("CREATE TABLE plain (Body String) ENGINE = MergeTree ORDER BY Body")

    def insert(table: str, token: str) -> None:
        status, _, text = chdb.post(
            json.dumps({"Body": "same row"}).encode() + b"\n",
            {
                "query": f"INSERT INTO {table} FORMAT JSONEachRow",
                "insert_deduplication_token": token,
            },
        )
        assert status == 200, text

    def count(table: str) -> int:
        return int(chdb.query(f"SELECT count() FROM {table}"))

    insert("tokens", "k1")
    insert("tokens", "k1")
    assert count("tokens") == 2
    insert("tokens", "k2")
    assert count("tokens") == 3
    # Without non_replicated_deduplication_window (which the DDL sets) a
    # MergeTree keeps every copy, token or not.
    insert("plain", "k1")
    insert("plain", "k1")
    assert count("plain") == 2


def test_a_row_the_engine_cannot_parse_is_rejected_not_retried(
    chdb: ChdbServer, logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    # The message cannot become a UInt64: code 27, which a current server
    # answers with 400.
    chdb.query(
        "CREATE TABLE strict (Timestamp DateTime64(9), Body UInt64)"
        " ENGINE = MergeTree ORDER BY Timestamp"
    )
    h = handler(chdb, "strict")
    logger.addHandler(h)
    logger.info("a")
    logger.info("b")
    h.flush()
    s = h.stats()
    assert s["dropped_by_reason"]["rejected"] == 2
    assert (s["sent"], s["failed_attempts"], s["retries"]) == (0, 1, 0)
    assert [(e["status"], e["code"]) for e in inserts(chdb, "strict")] == [(400, 27)]
    assert chdb.query("SELECT count() FROM strict") == "0\n"
    h.close()
    assert "ClickHouse refused the rows: Code: 27. DB::Exception: Cannot parse input" in (
        capfd.readouterr().err
    )


def test_a_missing_table_and_a_wrong_password_are_refused(
    chdb: ChdbServer, logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = handler(chdb, "no_such_table")
    wrong = timber.TimberHandler(
        destination="clickhouse", host=chdb.url, table="made", username=USER, password="wrong"
    )
    logger.addHandler(missing)
    logger.addHandler(wrong)
    logger.info("lost")
    missing.flush()
    wrong.flush()
    for h in (missing, wrong):
        s = h.stats()
        assert (s["dropped_by_reason"]["rejected"], s["failed_attempts"], s["retries"]) == (1, 1, 0)
        h.close()
    assert [(e["status"], e["code"]) for e in inserts(chdb, "no_such_table")] == [(404, 60)]
    assert (inserts(chdb, "made")[-1]["status"], inserts(chdb, "made")[-1]["code"]) == (403, 516)
    err = capfd.readouterr().err
    assert "ClickHouse has no table no_such_table" in err
    assert "ClickHouse refused the credentials" in err


def test_a_gateway_stopped_mid_insert_replays_its_spool_once(
    chdb: ChdbServer, start_collector: Callable[..., Collector], tmp_path: Path
) -> None:
    """`timber collect --clickhouse` with a spool: a batch the engine stored
    but never answered is still in flight when the gateway is stopped; it
    goes to the spool, is sent again by the next gateway with the same
    token, and is stored once."""
    flags = (
        "--clickhouse", chdb.url, "--table", "gw_once", "--create-table",
        "--username", USER, "--password", PASSWORD, "--spool-dir", str(tmp_path / "spool"),
    )  # fmt: skip
    frames = [
        {"dt": "2026-11-24T10:00:00Z", "level": "info", "message": f"job {i}", "job": {"id": i}}
        for i in range(100)
    ]

    def count() -> int:
        try:
            return int(chdb.query("SELECT count() FROM gw_once"))
        except AssertionError:  # no table yet
            return 0

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while count() < n:
            assert time.monotonic() < deadline, f"{count()} of {n} rows"
            time.sleep(0.1)

    gw = start_collector(*flags)
    assert gw.post("/sources/jobs/frames", msgpack.packb(frames[:1]))[0] == 202
    wait_for(1)
    chdb.lose_answers(inserts=1, hold=30)
    assert gw.post("/sources/jobs/frames", msgpack.packb(frames[1:]))[0] == 202
    wait_for(100)  # stored; the answer is held
    assert gw.stop() == 0
    assert gw.stderr().splitlines()[-1].endswith("1 records in ClickHouse, 99 spooled, 0 dropped")
    again = start_collector(*flags)
    deadline = time.monotonic() + 30
    while len(stored := [e for e in inserts(chdb, "gw_once") if e["status"] == 200]) < 3:
        assert time.monotonic() < deadline, stored
        time.sleep(0.1)
    assert again.stop() == 0
    first, lost, replayed = stored
    assert (lost["lost"], replayed["lost"]) == (True, False)
    token = lost["settings"]["insert_deduplication_token"]
    assert replayed["settings"]["insert_deduplication_token"] == token
    assert token != first["settings"]["insert_deduplication_token"]
    (got,) = chdb.rows(
        "SELECT count() AS rows, uniqExact(LogAttributes['job.id']) AS ids, "
        "any(ServiceName) AS service FROM gw_once"
    )
    assert got == {"rows": 100, "ids": 100, "service": "jobs"}
