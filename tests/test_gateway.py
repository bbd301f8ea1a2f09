"""`timber collect --clickhouse URL`: the collector as a gateway in front of a
real ClickHouse server (Debian's 18.16, see clickhouse_server.py).

Each frame must become the row the handler itself would have written with
destination='clickhouse'; whatever the gateway took must reach the table,
through an outage and a restart, with the spool."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

import timber
from clickhouse_server import PASSWORD, USER, ClickHouse, free_port
from conftest import Collector


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    server = ClickHouse(tmp_path_factory.mktemp("ch") / "server")
    yield server
    server.close()


def gateway_flags(url: str, table: str, *more: str) -> tuple[str, ...]:
    return ("--clickhouse", url, "--table", table, "--create-table", *more)


def wait_rows(ch: ClickHouse, table: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            count = int(ch.query(f"SELECT count() FROM {table}"))
        except OSError:
            count = -1
        if count >= n or time.monotonic() > deadline:
            return ch.rows(table)
        time.sleep(0.2)


def attrs(row: dict[str, Any], name: str) -> dict[str, str]:
    return dict(zip(row[f"{name}.key"], row[f"{name}.value"], strict=True))


def test_each_frame_becomes_the_row_the_handler_would_write(
    clickhouse: ClickHouse,
    start_collector: Callable[..., Collector],
    logger: logging.Logger,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    gw = start_collector(
        *gateway_flags(clickhouse.url, "via_gateway", "--username", USER),
        env={"TIMBER_CLICKHOUSE_PASSWORD": PASSWORD},
    )
    assert "forwarding to ClickHouse at http://127.0.0.1" in gw.banner
    direct = timber.TimberHandler(
        destination="clickhouse",
        host=clickhouse.url,
        table="direct",
        create_table=True,
        username=USER,
        password=PASSWORD,
        service_name="shop",
    )
    shipped = timber.TimberHandler(api_key="k", source_id="shop", host=gw.url)
    logger.addHandler(direct)
    logger.addHandler(shipped)
    logger.info("placed", extra={"order_placed": {"id": 1234, "total": 520.23}})
    with timber.context(user={"id": 123}):
        logger.warning("in context", extra={"cart": {"items": ["a", "b"], "empty": {}}})
    try:
        raise ValueError("bad total")
    except ValueError:
        logger.exception("failed")
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        logger.error("in a span")
        ctx = span.get_span_context()
    direct.flush()
    shipped.flush()
    want = {r["Body"]: r for r in clickhouse.rows("direct")}
    got = {r["Body"]: r for r in wait_rows(clickhouse, "via_gateway", 4)}
    assert sorted(got) == sorted(want) == ["failed", "in a span", "in context", "placed"]
    for body, w in want.items():
        g = got[body]
        # The frame carries microseconds; the handler's own row nanoseconds.
        assert abs(_micros(g["Timestamp"]) - _micros(w["Timestamp"])) <= 1, body
        g_attrs, w_attrs = attrs(g, "LogAttributes"), attrs(w, "LogAttributes")
        # The gateway rebuilds the traceback's text from the frame's lines.
        stack = g_attrs.pop("exception.stacktrace", None)
        w_stack = w_attrs.pop("exception.stacktrace", None)
        if body == "failed":
            assert stack is not None and w_stack is not None
            assert stack.startswith("Traceback (most recent call last):\n  File ")
            assert stack.endswith(
                "in test_each_frame_becomes_the_row_the_handler_would_write\nValueError: bad total"
            )
        # The frame names the file, not its full path.
        assert Path(w_attrs.pop("code.file.path")).name == g_attrs.pop("code.file.path")
        assert g_attrs == w_attrs, body
        assert attrs(g, "ResourceAttributes") == attrs(w, "ResourceAttributes")
        for column in (
            "TraceId",
            "SpanId",
            "TraceFlags",
            "SeverityText",
            "SeverityNumber",
            "ServiceName",
            "ScopeName",
        ):
            assert g[column] == w[column], (body, column)
    assert got["in a span"]["TraceId"] == f"{ctx.trace_id:032x}"
    assert attrs(got["in context"], "LogAttributes")["user.id"] == "123"
    assert attrs(got["placed"], "LogAttributes")["order_placed.total"] == "520.23"
    direct.close()
    shipped.close()


def _micros(timestamp: str) -> int:
    """`YYYY-MM-DD hh:mm:ss.nnnnnnnnn` to microseconds of the day and date."""
    date, clock = timestamp.split(" ")
    hms, fraction = clock.split(".")
    h, m, s = (int(x) for x in hms.split(":"))
    day = int(date.replace("-", ""))
    return ((day * 86400 + h * 3600 + m * 60 + s) * 1_000_000) + int(fraction[:6])


def test_every_receiver_feeds_the_table(
    clickhouse: ClickHouse, start_collector: Callable[..., Collector]
) -> None:
    gw = start_collector(
        *gateway_flags(clickhouse.url, "receivers"),
        "--root-source",
        "edge",
        env={"TIMBER_CLICKHOUSE_USER": USER, "TIMBER_CLICKHOUSE_PASSWORD": PASSWORD},
    )
    frame = {"dt": "2026-11-24T10:00:00.123456Z", "level": "info", "message": "from frames"}
    assert gw.post("/sources/api/frames", msgpack.packb([frame]))[0] == 202
    better = dict(frame, message="from better stack")
    assert gw.post("/", msgpack.packb([better]))[0] == 202
    named = dict(frame, message="named", context={"service": {"name": "billing"}})
    assert (
        gw.post("/sources/api/frames", json.dumps([named]).encode(), "application/json")[0] == 202
    )
    otlp = timber.TimberHandler(destination="otlp", host=gw.url, service_name="checkout")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "from otlp", None, None)
    otlp.handle(record)
    otlp.flush()
    otlp.close()
    rows = {r["Body"]: r for r in wait_rows(clickhouse, "receivers", 4)}
    assert {b: r["ServiceName"] for b, r in rows.items()} == {
        "from frames": "api",
        "from better stack": "edge",
        "named": "billing",
        "from otlp": "checkout",
    }
    assert rows["from frames"]["Timestamp"] == "2026-11-24 10:00:00.123456000Z"


def test_what_the_gateway_took_survives_an_outage_and_a_restart(
    tmp_path: Path, start_collector: Callable[..., Collector], logger: logging.Logger
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spool = tmp_path / "spool"
    flags = gateway_flags(
        url, "outage", "--username", USER, "--password", PASSWORD, "--spool-dir", str(spool)
    )
    gw = start_collector(*flags)
    h = timber.TimberHandler(api_key="k", source_id="jobs", host=gw.url)
    logger.addHandler(h)
    for i in range(3000):
        logger.info("during the outage", extra={"job": {"id": i}})
    h.flush()
    assert h.stats()["sent"] == 3000
    # Nothing listens on the port: the gateway keeps the rows on disk.
    assert gw.stop() == 0
    assert "0 records in ClickHouse, 3000 spooled, 0 dropped" in gw.stderr()
    ch = ClickHouse(tmp_path / "ch", http_port=port)
    try:
        again = start_collector(*flags)
        rows = wait_rows(ch, "outage", 3000)
        ids = [int(attrs(r, "LogAttributes")["job.id"]) for r in rows]
        assert sorted(ids) == list(range(3000))
        assert again.stop() == 0
    finally:
        ch.close()
    h.close()


def test_gateway_flags_are_checked(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "timber", "collect", "--listen", "127.0.0.1:0", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    bad = run("--table", "logs")
    assert bad.returncode == 2 and "--table needs --clickhouse URL" in bad.stderr
    bad = run("--clickhouse", "http://127.0.0.1:8123", "--table", "a;b")
    assert bad.returncode != 0 and "table" in bad.stderr
    bad = run("--clickhouse", "http://127.0.0.1:99999")
    assert bad.returncode != 0 and "port" in bad.stderr
