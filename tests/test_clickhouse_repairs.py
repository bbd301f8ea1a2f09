"""The ClickHouse destination's repairs, against both real servers (Debian's
18.16 and the current engine in chdb): creating a missing table, leaving out
the deduplication token a server lacks, and learning the table's layout.

A repair is one state per destination that every sender waits on: batches
in flight on other senders while it runs are sent again once it is done,
never refused; a repair that fails is tried again later; and the layout
(maps as `Map` or as `Nested`) is the table's, read with `DESCRIBE TABLE`,
not guessed from the server's version."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

import timber
from chdb_server import ChdbServer
from clickhouse_server import SCALARS, ClickHouse, free_port
from clickhouse_server import handler as clickhouse_handler


class Server(Protocol):
    url: str

    def query(self, sql: str) -> str: ...


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    server = ClickHouse(tmp_path_factory.mktemp("ch") / "server")
    yield server
    server.close()


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbServer]:
    server = ChdbServer(tmp_path_factory.mktemp("chdb"))
    yield server
    server.close()


@pytest.fixture(params=["18.16", "current"])
def server(request: pytest.FixtureRequest) -> Server:
    s: Server = request.getfixturevalue("old" if request.param == "18.16" else "current")
    return s


def handler(url: str, table: str, **kw: Any) -> timber.TimberHandler:
    return clickhouse_handler(url, table, **kw)


def stored(server: Server, table: str) -> tuple[int, int]:
    """(rows, distinct bodies) of a table."""
    rows, bodies = server.query(f"SELECT count(), uniqExact(Body) FROM {table}").split()
    return int(rows), int(bodies)


def burst(logger: logging.Logger, h: timber.TimberHandler, n: int) -> dict[str, Any]:
    logger.addHandler(h)
    for i in range(n):
        logger.info("burst %d", i, extra={"n": i})
    h.flush()
    stats = h.stats()
    logger.removeHandler(h)
    h.close()
    return stats


@pytest.mark.parametrize("senders", [None, 8])
def test_create_table_keeps_every_batch_in_flight(
    server: Server, senders: int | None, logger: logging.Logger
) -> None:
    """A 5,000-record burst into a missing table: the batches on the other
    senders while the table is being made wait for it, then go in. A few
    rounds here; bench/clickhouse_create.py runs 20."""
    more = {} if senders is None else {"max_in_flight": senders}
    for round in range(3):
        table = f"burst_{senders or 2}_{round}"
        stats = burst(logger, handler(server.url, table, create_table=True, **more), 5000)
        assert (stats["sent"], stats["dropped"]) == (5000, 0), (round, stats)
        assert stored(server, table) == (5000, 5000), round


def test_a_repair_that_timed_out_is_tried_again(
    current: ChdbServer, logger: logging.Logger
) -> None:
    """The queries of a repair (the layout, the version, the CREATE) time
    out: the batch is retried later, and the next attempt makes the table;
    one slow answer never disables create_table for the handler's life."""
    current.delay_queries(queries=1, delay=3)
    h = handler(current.url, "slow_repair", create_table=True, timeout=1)
    first = burst(logger, h, 1)
    assert (first["sent"], first["dropped"]) == (1, 0), first
    assert first["retries"] >= 1
    h = handler(current.url, "slow_repair_later", create_table=True, timeout=1)
    logger.addHandler(h)
    logger.info("the first batch")
    h.flush()
    # The table is dropped under the handler: it is made again, as often as needed.
    current.query("DROP TABLE slow_repair_later")
    current.delay_queries(queries=1, delay=3)
    for i in range(100):
        logger.info("after %d", i)
    h.flush()
    stats = h.stats()
    assert (stats["sent"], stats["dropped"]) == (101, 0), stats
    assert stored(current, "slow_repair_later") == (100, 100)


def test_every_sender_leaves_out_a_token_the_server_lacks(
    old: ClickHouse, logger: logging.Logger
) -> None:
    """18.16 refuses insert_deduplication_token (code 115): the batches
    already in flight on the other seven senders are sent again without it
    too, not refused."""
    for round in range(5):
        table = f"tokens_{round}"
        old.query(f"CREATE TABLE {table} ({SCALARS}) ENGINE = MergeTree() ORDER BY Timestamp")
        h = handler(old.url, table, max_in_flight=8, buffer_capacity=100)
        stats = burst(logger, h, 3000)
        assert (stats["sent"], stats["dropped"]) == (3000, 0), (round, stats)
        assert stored(old, table) == (3000, 3000), round


NESTED = (
    "Timestamp {time}, Body String, ServiceName String, "
    "ResourceAttributes Nested(key String, value String), "
    "LogAttributes Nested(key String, value String)"
)


def test_the_layout_is_the_tables_not_the_servers(
    current: ChdbServer, logger: logging.Logger
) -> None:
    """A table with the maps as Nested on a current server (made before an
    upgrade, by another tool): the rows carry their attributes as Nested."""
    current.query(
        f"CREATE TABLE nested_here ({NESTED.format(time='DateTime64(9)')})"
        " ENGINE = MergeTree ORDER BY Timestamp"
    )
    h = handler(current.url, "nested_here")
    logger.addHandler(h)
    logger.info("kept", extra={"order": {"id": 7}})
    h.flush()
    assert h.stats()["sent"] == 1
    (row,) = current.rows(
        "SELECT Body, LogAttributes.value[indexOf(LogAttributes.key, 'order.id')] AS id,"
        " ResourceAttributes.value[indexOf(ResourceAttributes.key, 'service.name')] AS service"
        " FROM nested_here"
    )
    assert row == {"Body": "kept", "id": "7", "service": "shop"}


def test_a_layout_changed_under_the_handler_is_learnt_again(
    tmp_path: Path, logger: logging.Logger
) -> None:
    """The server is upgraded under a running handler: 18.16 with the
    Nested layout, then a current server on the same port whose table has
    real maps. The first insert in the old layout is refused by the new
    table, the handler reads the table again and sends the batch in its
    layout, with the deduplication token the new server has."""
    port = free_port()
    old = ClickHouse(tmp_path / "old", http_port=port)
    try:
        h = handler(old.url, "upgraded", create_table=True)
        logger.addHandler(h)
        logger.info("on 18.16", extra={"n": 1})
        h.flush()
    finally:
        old.kill()  # stopped for the upgrade (a graceful stop only takes longer)
    new = ChdbServer(tmp_path / "new", port=port)
    try:
        # The new server's table, made as create_table makes it there.
        other = logging.getLogger(f"make.{id(new)}")
        other.propagate = False
        other.setLevel(logging.INFO)
        made = burst(other, handler(new.url, "upgraded", create_table=True), 1)
        assert made["sent"] == 1, made
        new.query("TRUNCATE TABLE upgraded")
        logger.info("on the current server", extra={"n": 2})
        h.flush()
        stats = h.stats()
        assert (stats["sent"], stats["dropped"]) == (2, 0), stats
        (row,) = new.rows("SELECT Body, LogAttributes['n'] AS n FROM upgraded")
        assert row == {"Body": "on the current server", "n": "2"}
        ok = [e for e in new.log() if e["query"].startswith("INSERT INTO upgraded ")][-1]
        assert ok["status"] == 200 and "insert_deduplication_token" in ok["settings"]
    finally:
        new.close()
