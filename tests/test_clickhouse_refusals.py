"""Rows a current ClickHouse refuses for their content, against the current
engine (chdb), through the handler and through the gateway: one such row
never takes the rows sharing its insert with it.

- A time the table cannot hold (`DateTime` runs from 1970 to 2106; a
  `DateTime64(9)` outside 1900-2262 refuses the whole insert with code 407,
  and `TimestampTime` wraps around outside 1970-2106) is replaced by the
  time the row was made, the record's own kept as `timber.original_time`,
  counted `retimed` and said on stderr.
- An insert spanning more partitions than the server takes in one block
  (100 days of the otel_logs DDL, code 252) is split and sent in parts,
  in the same attempt, from memory and from the spool alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from chdb_server import PASSWORD, USER, ChdbServer
from clickhouse_server import free_port
from clickhouse_server import handler as clickhouse_handler
from conftest import Collector

DAY = 86400.0


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbServer]:
    server = ChdbServer(tmp_path_factory.mktemp("chdb"))
    yield server
    server.close()


class SetTime(logging.Filter):
    """Dates the records whose message is in `times` as given (a record
    made by a program whose clock or data is wrong)."""

    def __init__(self, times: dict[str, float]) -> None:
        super().__init__()
        self.times = times

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() in self.times:
            record.created = self.times[record.getMessage()]
        return True


def count(ch: ChdbServer, table: str) -> int:
    try:
        return int(ch.query(f"SELECT count() FROM {table}"))
    except AssertionError:  # no table yet
        return 0


def wait_count(ch: ChdbServer, table: str, n: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (got := count(ch, table)) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


def test_a_time_the_table_cannot_hold_sinks_no_insert(
    chdb: ChdbServer, logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    year_1 = -62135596800.0  # 0001-01-01T00:00:00Z
    year_3000 = 32503680000.0  # 3000-01-01T00:00:00Z
    before_1970 = -DAY
    logger.addFilter(SetTime({"year 1": year_1, "year 3000": year_3000, "1969": before_1970}))
    h = clickhouse_handler(chdb.url, "times", create_table=True)
    logger.addHandler(h)
    made = time.time()
    for i in range(20):
        logger.info("good %d", i)
    for message in ("year 1", "year 3000", "1969"):
        logger.info(message)
    h.flush()
    rows = {
        r["Body"]: r
        for r in chdb.rows(
            "SELECT Body, toUnixTimestamp(TimestampTime) AS seconds,"
            " toUnixTimestamp64Nano(Timestamp) AS ns,"
            " LogAttributes['timber.original_time'] AS original FROM times"
        )
    }
    assert len(rows) == 23
    stats = h.stats()
    assert (stats["sent"], stats["dropped"], stats["retimed"]) == (23, 0, 3), stats
    assert rows["year 1"]["original"] == "0001-01-01T00:00:00Z"
    assert rows["year 3000"]["original"] == "3000-01-01T00:00:00Z"
    assert rows["1969"]["original"] == "1969-12-31T00:00:00Z"
    for message in ("year 1", "year 3000", "1969"):
        row = rows[message]
        # Stored as made, and where a query for the recent rows finds it.
        assert abs(int(row["seconds"]) - made) < 600, row
        assert int(row["ns"]) // 10**9 == int(row["seconds"])
    assert rows["good 0"]["original"] == ""
    h.close()
    err = capfd.readouterr().err
    assert "outside what ClickHouse's DateTime holds" in err, err


def test_an_insert_spanning_more_than_100_days_is_sent_in_parts(
    chdb: ChdbServer, logger: logging.Logger
) -> None:
    now = time.time()
    days = {f"day {d}": now - d * DAY for d in range(150)}
    logger.addFilter(SetTime(days))
    h = clickhouse_handler(
        chdb.url, "spanning", create_table=True, retry_timeout=5, buffer_capacity=1000
    )
    logger.addHandler(h)
    for message in days:
        logger.info(message)
    h.flush()
    stats = h.stats()
    assert (stats["sent"], stats["dropped"], stats["batches_sent"]) == (150, 0, 1), stats
    assert count(chdb, "spanning") == 150
    assert int(chdb.query("SELECT uniqExact(toDate(TimestampTime)) FROM spanning")) == 150
    refused = [
        e
        for e in chdb.log()
        if e["query"].startswith("INSERT INTO spanning ") and e["status"] != 200
    ]
    assert [e["code"] for e in refused] == [252]
    h.close()


def gateway_flags(url: str, table: str, *more: str) -> tuple[str, ...]:
    return (
        "--clickhouse", url, "--table", table, "--create-table",
        "--username", USER, "--password", PASSWORD, *more,
    )  # fmt: skip


def frame(message: str, dt: str, **extra: Any) -> dict[str, Any]:
    return {"dt": dt, "level": "info", "message": message, **extra}


def test_one_clients_bad_time_sinks_no_other_clients_rows(
    chdb: ChdbServer, start_collector: Callable[..., Collector]
) -> None:
    gw = start_collector(*gateway_flags(chdb.url, "gw_times"))
    good = [frame(f"good {i}", "2026-11-24T10:00:00Z") for i in range(50)]
    bad = [frame("dated year 1", "0001-01-01T00:00:00Z")]
    # Two clients within the gateway's one-second batch: one insert.
    assert gw.post("/sources/api/frames", msgpack.packb(good))[0] == 202
    assert gw.post("/sources/broken/frames", msgpack.packb(bad))[0] == 202
    assert wait_count(chdb, "gw_times", 51) == 51
    (row,) = chdb.rows(
        "SELECT ServiceName, LogAttributes['timber.original_time'] AS original"
        " FROM gw_times WHERE Body = 'dated year 1'"
    )
    assert row == {"ServiceName": "broken", "original": "0001-01-01T00:00:00Z"}
    assert gw.stop() == 0
    assert gw.stderr().splitlines()[-1].endswith("51 records in ClickHouse, 0 spooled, 0 dropped")


def test_a_spooled_batch_spanning_150_days_does_not_head_the_spool(
    tmp_path: Path, start_collector: Callable[..., Collector]
) -> None:
    """ClickHouse is down when the gateway takes a batch spanning 150 days:
    it is spooled; once ClickHouse is up, it is replayed in parts, and the
    rows taken after it are stored too."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = start_collector(*gateway_flags(url, "gw_days", "--spool-dir", str(tmp_path / "spool")))
    old = [
        frame(f"day {d}", f"2026-{1 + d // 28:02d}-{1 + d % 28:02d}T10:00:00Z") for d in range(150)
    ]
    assert gw.post("/sources/backfill/frames", msgpack.packb(old))[0] == 202
    ch = ChdbServer(tmp_path / "chdb", port=port)
    try:
        later = [frame(f"later {i}", "2026-11-24T10:00:00Z") for i in range(100)]
        assert gw.post("/sources/api/frames", msgpack.packb(later))[0] == 202
        assert wait_count(ch, "gw_days", 250, timeout=60) == 250
        assert int(ch.query("SELECT uniqExact(Body) FROM gw_days")) == 250
        assert gw.stop() == 0
    finally:
        ch.close()
