"""Past one machine, on loopback: two real ClickHouse servers as the two
shards of a `Distributed` table, two `timber collect --clickhouse` gateways
(one in front of each server), and logging processes spread across the
gateways. Every record must be stored exactly once across the shards
(count and distinct ids), while one gateway is stopped and restarted
mid-run with its spool, and one shard is killed and down for 10 seconds.

ClickHouse 18.16 has no insert_deduplication_token: an insert the killed
shard stored but did not answer would be stored twice when retried. That
window (between a part's commit and the answer) is well under a
millisecond per insert; on a current server the token closes it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from clickhouse_server import PASSWORD, USER, ClickHouse, free_port
from conftest import Collector

PROCESSES = 4
RECORDS = 4000  # per process, over about 8 seconds

CLUSTER = """<remote_servers><logs>
  <shard><replica><host>127.0.0.1</host><port>{a}</port>
    <user>{user}</user><password>{password}</password></replica></shard>
  <shard><replica><host>127.0.0.1</host><port>{b}</port>
    <user>{user}</user><password>{password}</password></replica></shard>
</logs></remote_servers>"""

# The otel_logs columns as an 18.16 server holds them (see clickhouse_server.py).
LOCAL = (
    "CREATE TABLE logs_local (Timestamp String, TraceId String, SpanId String, "
    "TraceFlags UInt32, SeverityText String, SeverityNumber Int32, ServiceName String, "
    "Body String, ResourceAttributes Nested(key String, value String), ScopeName String, "
    "LogAttributes Nested(key String, value String)) "
    "ENGINE = MergeTree() ORDER BY (ServiceName, Timestamp)"
)
DISTRIBUTED = (
    "CREATE TABLE logs AS logs_local ENGINE = Distributed(logs, default, logs_local, rand())"
)

APP = textwrap.dedent(
    """
    import logging, sys, time
    import timber

    n, url, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    log = logging.getLogger("app")
    log.setLevel(logging.INFO)
    h = timber.TimberHandler(api_key="k", source_id=f"svc{n}", host=url,
                             backoff_base=0.1, backoff_max=1, flush_interval=0.2)
    log.addHandler(h)
    start = time.monotonic()
    for i in range(count):
        log.info("record %d", i, extra={"rec": {"id": f"{n}-{i}"}})
        if i % 50 == 49:
            time.sleep(max(0.0, start + (i + 1) / 500 - time.monotonic()))
    """
)


def test_records_are_stored_once_across_shards_through_restarts(
    tmp_path: Path, start_collector: Callable[..., Collector]
) -> None:
    tcp_a, tcp_b = free_port(), free_port()
    cluster = CLUSTER.format(a=tcp_a, b=tcp_b, user=USER, password=PASSWORD)
    shard_a = ClickHouse(tmp_path / "a", remote_servers=cluster, tcp_port=tcp_a)
    shard_b = ClickHouse(tmp_path / "b", remote_servers=cluster, tcp_port=tcp_b)
    apps: list[subprocess.Popen[bytes]] = []
    try:
        for shard in (shard_a, shard_b):
            shard.query(LOCAL)
            shard.query(DISTRIBUTED)
        ports = [free_port(), free_port()]

        def gateway(i: int, shard: ClickHouse) -> Collector:
            return start_collector(
                "--listen", f"127.0.0.1:{ports[i]}",
                "--clickhouse", shard.url, "--table", "logs",
                "--username", USER, "--password", PASSWORD,
                "--spool-dir", str(tmp_path / f"spool{i}"),
            )  # fmt: skip

        gateways = [gateway(0, shard_a), gateway(1, shard_b)]
        apps = [
            subprocess.Popen(
                [sys.executable, "-c", APP, str(n), gateways[n % 2].url, str(RECORDS)],
                stderr=subprocess.PIPE,
            )
            for n in range(PROCESSES)
        ]
        time.sleep(2)
        # A gateway stopped mid-run (as a deploy does) and started again.
        assert gateways[0].stop() == 0
        time.sleep(0.5)
        gateways[0] = gateway(0, shard_a)
        time.sleep(1)
        # A shard down for 10 seconds: its gateway spools, the other
        # server's Distributed table queues the rows meant for it.
        shard_b.kill()
        time.sleep(10)
        shard_b.start()
        for app in apps:
            _, err = app.communicate(timeout=120)
            assert app.returncode == 0, err.decode()
            assert b"not delivered" not in err, err.decode()
        total = PROCESSES * RECORDS
        deadline = time.monotonic() + 90
        count = 0
        while time.monotonic() < deadline:
            count = int(shard_a.query("SELECT count() FROM logs"))
            if count >= total:
                break
            time.sleep(0.5)
        rid = "LogAttributes.value[indexOf(LogAttributes.key, 'rec.id')]"
        stored, distinct = shard_a.query(f"SELECT count(), uniqExact({rid}) FROM logs").split()
        assert (int(stored), int(distinct)) == (total, total)
        # Both shards hold part of it.
        on_a = int(shard_a.query("SELECT count() FROM logs_local"))
        on_b = int(shard_b.query("SELECT count() FROM logs_local"))
        assert on_a + on_b == total and on_a > 0 and on_b > 0
        totals = []
        for g in gateways:
            assert g.stop() == 0
            last = g.stderr().splitlines()[-1]
            match = re.search(r"(\d+) records in ClickHouse, (\d+) spooled, 0 dropped", last)
            assert match is not None, g.stderr()
            totals.append((int(match[1]), int(match[2])))
        # The shard's outage was felt: its gateway kept rows on disk for it.
        assert totals[1][1] > 0, totals
    finally:
        for app in apps:
            if app.poll() is None:
                app.kill()
                app.wait()
        shard_a.close()
        shard_b.close()
