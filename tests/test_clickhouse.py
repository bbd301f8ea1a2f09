"""destination='clickhouse' against a real ClickHouse server (Debian's
clickhouse-server, installed by `make setup`), started as a plain process on
a free loopback port with its configuration in a temporary directory.

The packaged server is 18.16: it has no Map, DateTime64 or
insert_deduplication_token. The handler must learn that from the server's own
refusal of the token (and its `SELECT version()`), send the batch again
without it, and with create_table=True create the older otel_logs equivalent
(maps as Nested). Deduplication by token cannot be shown on this server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import timber
from clickhouse_server import SCALARS, USER, ClickHouse
from clickhouse_server import handler as clickhouse_handler


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    server = ClickHouse(tmp_path_factory.mktemp("ch") / "server")
    yield server
    server.close()


def handler(ch: ClickHouse, table: str, **kw: Any) -> timber.TimberHandler:
    return clickhouse_handler(ch.url, table, **kw)


def test_records_arrive_as_otel_logs_rows(clickhouse: ClickHouse, logger: logging.Logger) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    # A table made by hand, with only the columns this server can type: the
    # maps are skipped (input_format_skip_unknown_fields goes with every insert).
    clickhouse.query(f"CREATE TABLE rows_in ({SCALARS}) ENGINE = MergeTree() ORDER BY Timestamp")
    h = handler(clickhouse, "default.rows_in", compression="gzip")
    logger.addHandler(h)
    logger.info("first", extra={"order": {"id": 7}})
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        logger.warning("second")
        ctx = span.get_span_context()
    logger.error("third")
    h.flush()
    stats = h.stats()
    rows = clickhouse.rows("rows_in")
    assert [r["Body"] for r in rows] == ["first", "second", "third"]
    assert [(r["SeverityText"], r["SeverityNumber"]) for r in rows] == [
        ("INFO", 9),
        ("WARN", 13),
        ("ERROR", 17),
    ]
    assert {r["ServiceName"] for r in rows} == {"shop"}
    assert {r["ScopeName"] for r in rows} == {logger.name}
    assert rows[1]["TraceId"] == f"{ctx.trace_id:032x}"
    assert rows[1]["SpanId"] == f"{ctx.span_id:016x}"
    assert rows[1]["TraceFlags"] == int(ctx.trace_flags)
    assert rows[0]["TraceId"] == ""
    # Nanoseconds, in DateTime64(9)'s text form.
    assert len(rows[0]["Timestamp"]) == len("2026-01-01 00:00:00.123456789Z")
    # 18.16 refused the deduplication token; the batch went again at once
    # without it, within the same attempt.
    assert (stats["sent"], stats["failed_attempts"], stats["dropped_by_reason"]["rejected"]) == (
        3,
        0,
        0,
    )
    h.close()


def test_a_row_the_server_cannot_parse_is_rejected_not_retried(
    clickhouse: ClickHouse, logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    # A message is no number: the server answers 500 with a parse error's code.
    clickhouse.query(
        "CREATE TABLE strict (Timestamp String, Body UInt64) ENGINE = MergeTree() ORDER BY Timestamp"
    )
    h = handler(clickhouse, "strict")
    logger.addHandler(h)
    logger.info("a")
    logger.info("b")
    h.flush()
    s = h.stats()
    assert s["dropped_by_reason"]["rejected"] == 2
    assert s["sent"] == 0
    assert (s["failed_attempts"], s["retries"]) == (1, 0)
    assert clickhouse.rows("strict") == []
    h.close()
    assert "Cannot parse input" in capfd.readouterr().err


def test_a_missing_table_is_refused_by_name(
    clickhouse: ClickHouse, logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    h = handler(clickhouse, "no_such_table")
    logger.addHandler(h)
    logger.info("lost")
    h.flush()
    s = h.stats()
    assert (s["dropped_by_reason"]["rejected"], s["failed_attempts"], s["retries"]) == (1, 1, 0)
    h.close()
    err = capfd.readouterr().err
    assert "ClickHouse has no table no_such_table" in err
    assert "docs/clickhouse.md has the otel_logs DDL" in err


def test_create_table_makes_the_layout_the_server_can_hold(
    clickhouse: ClickHouse, logger: logging.Logger
) -> None:
    h = handler(clickhouse, "made", create_table=True)
    logger.addHandler(h)
    logger.info("before the server was known", extra={"cart": {"n": 1}})
    h.flush()
    # From here on rows are written for 18.16: the maps as Nested arrays.
    logger.info("after", extra={"order": {"id": 7, "tags": ["a"]}})
    h.flush()
    s = h.stats()
    assert (s["sent"], s["failed_attempts"]) == (2, 0)
    columns = clickhouse.query("SELECT name, type FROM system.columns WHERE table = 'made'")
    assert "LogAttributes.key\tArray(String)" in columns
    assert "Timestamp\tString" in columns
    first, second = clickhouse.rows("made")
    assert first["Body"] == "before the server was known"
    # Encoded before the server's version was known, sent in its layout.
    assert (
        dict(zip(first["LogAttributes.key"], first["LogAttributes.value"], strict=True))["cart.n"]
        == "1"
    )
    assert second["Body"] == "after"
    attrs = dict(zip(second["LogAttributes.key"], second["LogAttributes.value"], strict=True))
    assert attrs["order.id"] == "7"
    assert attrs["order.tags"] == '["a"]'
    assert attrs["code.function.name"] == "test_create_table_makes_the_layout_the_server_can_hold"
    resource = dict(
        zip(second["ResourceAttributes.key"], second["ResourceAttributes.value"], strict=True)
    )
    assert resource["service.name"] == "shop"
    h.close()


def test_wrong_password_is_refused(clickhouse: ClickHouse, logger: logging.Logger) -> None:
    h = timber.TimberHandler(
        destination="clickhouse", host=clickhouse.url, username=USER, password="wrong"
    )
    logger.addHandler(h)
    logger.info("x")
    h.flush()
    assert h.stats()["dropped_by_reason"]["rejected"] == 1
    h.close()


def test_table_names_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^table .*letters, digits and _"):
        timber.TimberHandler(destination="clickhouse", table="logs; DROP TABLE x")
