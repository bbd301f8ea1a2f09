"""The OpenTelemetry side of the ClickHouse paths, against the current engine
(chdb_server.py) with the OpenTelemetry Collector exporter's columns: the
resource a process names in `OTEL_RESOURCE_ATTRIBUTES`, and an OTLP export
sent by the official SDK and exporter through `timber collect` (as a
collector writing files, and as a gateway), must arrive as that exporter
writes them: `ServiceName` the real `service.name`, every resource attribute
in `ResourceAttributes`, custom levels with the severity they were sent
with, and an export taken whole or not at all."""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

import timber
from chdb_server import PASSWORD, USER, ChdbServer
from conftest import Collector

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

NOTICE, TRACE = 25, 5

# The columns of the exporter's otel_logs that these tests read.
DDL = (
    "CREATE TABLE {table} (Timestamp DateTime64(9), TraceId String, SpanId String, "
    "TraceFlags UInt8, SeverityText LowCardinality(String), SeverityNumber UInt8, "
    "ServiceName LowCardinality(String), Body String, "
    "ResourceAttributes Map(LowCardinality(String), String), ScopeName String, "
    "LogAttributes Map(LowCardinality(String), String)) "
    "ENGINE = MergeTree ORDER BY (ServiceName, Timestamp)"
)

SERVICE = "Checkout Service/v2 ü"
RESOURCE = {
    "service.name": SERVICE,
    "service.version": "2.1.0",
    "service.namespace": "shop",
    "deployment.environment.name": "prod",
}


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    logging.addLevelName(NOTICE, "NOTICE")
    logging.addLevelName(TRACE, "TRACE")
    yield
    for n in (NOTICE, TRACE):
        logging.addLevelName(n, f"Level {n}")


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbServer]:
    server = ChdbServer(tmp_path_factory.mktemp("chdb"))
    yield server
    server.close()


def table(ch: ChdbServer, name: str) -> str:
    ch.query(DDL.format(table=name))
    return name


def wait_rows(ch: ChdbServer, name: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = ch.rows(f"SELECT * FROM {name} ORDER BY Timestamp")
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def gateway(start: Callable[..., Collector], ch: ChdbServer, name: str, *more: str) -> Collector:
    return start(
        "--quiet",
        "--clickhouse",
        ch.url,
        "--table",
        name,
        "--username",
        USER,
        "--password",
        PASSWORD,
        *more,
    )


def sdk_handler(provider: LoggerProvider, level: int = logging.NOTSET) -> LoggingHandler:
    with warnings.catch_warnings():
        # Deprecated for opentelemetry-instrumentation-logging's, the same handler.
        warnings.simplefilter("ignore", DeprecationWarning)
        return LoggingHandler(level=level, logger_provider=provider)


def exporter_logger(url: str, resource: dict[str, str]) -> tuple[logging.Logger, LoggerProvider]:
    """A logger whose records go through the official SDK and OTLP/HTTP exporter."""
    provider = LoggerProvider(resource=Resource.create(resource))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs"))
    )
    lg = logging.getLogger(f"otel.{id(provider)}")
    lg.setLevel(1)
    lg.propagate = False
    lg.addHandler(sdk_handler(provider, 1))
    return lg, provider


def log_levels(lg: logging.Logger) -> None:
    lg.log(NOTICE, "a notice")
    lg.log(TRACE, "a trace")
    lg.info("an info")


def test_clickhouse_rows_name_the_service_of_otel_resource_attributes(
    chdb: ChdbServer, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", ",".join(f"{k}={v}" for k, v in RESOURCE.items())
    )
    name = table(chdb, "res_service")
    h = timber.TimberHandler(
        destination="clickhouse", host=chdb.url, table=name, username=USER, password=PASSWORD
    )
    logger.addHandler(h)
    logger.info("hello")
    h.flush()
    (row,) = wait_rows(chdb, name, 1)
    assert row["ServiceName"] == SERVICE
    # OTEL_SERVICE_NAME (the option's variable) wins, as the SDK has it.
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    named = timber.TimberHandler(
        destination="clickhouse", host=chdb.url, table=name, username=USER, password=PASSWORD
    )
    logger.addHandler(named)
    logger.removeHandler(h)
    logger.info("named")
    named.flush()
    rows = {r["Body"]: r for r in wait_rows(chdb, name, 2)}
    assert rows["named"]["ServiceName"] == "billing"
    assert rows["named"]["ResourceAttributes"]["service.name"] == "billing"
    h.close()


def test_clickhouse_rows_keep_every_otel_resource_attribute(
    chdb: ChdbServer, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.version=2.1.0,deployment.environment.name=prod,service.namespace=shop,team=a%20b",
    )
    name = table(chdb, "res_attrs")
    h = timber.TimberHandler(
        destination="clickhouse",
        host=chdb.url,
        table=name,
        username=USER,
        password=PASSWORD,
        service_name="checkout",
    )
    logger.addHandler(h)
    logger.info("hello")
    h.flush()
    (row,) = wait_rows(chdb, name, 1)
    assert row["ResourceAttributes"] == {
        "service.name": "checkout",
        "service.version": "2.1.0",
        "deployment.environment.name": "prod",
        "service.namespace": "shop",
        "team": "a b",
        "host.name": row["ResourceAttributes"]["host.name"],
        "process.pid": str(os.getpid()),
    }


def through_the_gateway(
    chdb: ChdbServer, start: Callable[..., Collector], name: str
) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """Logs `log_levels` through the SDK's exporter into a gateway: the rows
    by body, and the records as the exporter sent them."""
    gw = gateway(start, chdb, table(chdb, name))
    lg, provider = exporter_logger(gw.url, RESOURCE)
    sent = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(sent))
    log_levels(lg)
    provider.shutdown()
    rows = {r["Body"]: r for r in wait_rows(chdb, name, 3)}
    assert sorted(rows) == ["a notice", "a trace", "an info"]
    return rows, [d.log_record for d in sent.get_finished_logs()]


def test_custom_levels_keep_their_severity_through_the_gateway(
    chdb: ChdbServer, start_collector: Callable[..., Collector]
) -> None:
    rows, sent = through_the_gateway(chdb, start_collector, "otlp_levels")
    for record in sent:
        row = rows[str(record.body)]
        assert (row["SeverityText"], row["SeverityNumber"]) == (
            record.severity_text,
            record.severity_number.value,
        )
    assert (rows["a notice"]["SeverityText"], rows["a notice"]["SeverityNumber"]) == ("NOTICE", 12)
    assert rows["a trace"]["SeverityText"] == "TRACE"


def test_service_name_is_the_resource_s_own_through_the_gateway(
    chdb: ChdbServer, start_collector: Callable[..., Collector]
) -> None:
    rows, _ = through_the_gateway(chdb, start_collector, "otlp_service")
    for row in rows.values():
        assert row["ServiceName"] == SERVICE
        assert row["ResourceAttributes"]["service.name"] == SERVICE


def test_the_resource_of_an_otlp_export_is_kept_through_the_gateway(
    chdb: ChdbServer, start_collector: Callable[..., Collector]
) -> None:
    rows, _ = through_the_gateway(chdb, start_collector, "otlp_resource")
    for row in rows.values():
        resource = row["ResourceAttributes"]
        for k in ("service.version", "service.namespace", "deployment.environment.name"):
            assert resource.get(k) == RESOURCE[k], k
        assert resource.get("telemetry.sdk.language") == "python"


def test_the_gateway_s_own_resource_is_not_its_senders(
    chdb: ChdbServer, start_collector: Callable[..., Collector]
) -> None:
    name = table(chdb, "gw_env")
    gw = start_collector(
        "--quiet", "--clickhouse", chdb.url, "--table", name,
        env={
            "TIMBER_CLICKHOUSE_USER": USER,
            "TIMBER_CLICKHOUSE_PASSWORD": PASSWORD,
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=gateway,k8s.pod.name=gw-1",
            "OTEL_SERVICE_NAME": "gateway",
        },
    )  # fmt: skip
    frame = {"dt": "2026-11-24T10:00:00Z", "level": "info", "message": "m"}
    assert (
        gw.post("/sources/api/frames", json.dumps([frame]).encode(), "application/json")[0] == 202
    )
    (row,) = wait_rows(chdb, name, 1)
    assert row["ServiceName"] == "api"
    assert sorted(row["ResourceAttributes"]) == ["host.name", "process.pid", "service.name"]
    assert row["ResourceAttributes"]["service.name"] == "api"


def test_custom_levels_keep_their_names_in_the_collector(
    start_collector: Callable[..., Collector], logger: logging.Logger
) -> None:
    collector = start_collector("--quiet")
    lg, provider = exporter_logger(collector.url, {"service.name": "sdk"})
    log_levels(lg)
    provider.shutdown()
    h = timber.TimberHandler(destination="otlp", host=collector.url, service_name="ours")
    logger.setLevel(1)
    logger.addHandler(h)
    log_levels(logger)
    h.flush()
    # What timber's handler sends to Timber for the same records.
    direct = timber.TimberHandler(api_key="k", source_id="direct", host=collector.url)
    logger.removeHandler(h)
    logger.addHandler(direct)
    log_levels(logger)
    direct.flush()
    want = {"a notice": "notice", "a trace": "trace", "an info": "info"}
    for source in ("sdk", "ours", "direct"):
        frames = collector.frames(source)
        assert {f["message"]: f["level"] for f in frames} == want, source
    h.close()


def post(url: str, body: bytes) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url,
        data=gzip.compress(body, 1),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    try:
        with _OPENER.open(request, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        with e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}


def export(*resources: tuple[str, list[str]]) -> bytes:
    """One export, one resource per (service, bodies), as the SDK encodes it."""
    logs = []
    for service, bodies in resources:
        kept = InMemoryLogRecordExporter()
        provider = LoggerProvider(resource=Resource.create({"service.name": service}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(kept))
        lg = logging.getLogger(f"export.{id(provider)}")
        lg.propagate = False
        lg.setLevel(logging.INFO)
        lg.addHandler(sdk_handler(provider))
        for body in bodies:
            lg.info(body)
        provider.shutdown()
        logs.extend(kept.get_finished_logs())
    request: ExportLogsServiceRequest = encode_logs(logs)
    assert len(request.resource_logs) == len(resources)
    return request.SerializeToString()


def test_an_otlp_export_is_taken_whole_or_not_at_all(
    chdb: ChdbServer, start_collector: Callable[..., Collector], tmp_path: Path
) -> None:
    name = table(chdb, "whole")
    # Room for the largest body; the second resource's rows (about 70 MB)
    # are more than the gateway's buffer holds (64 MiB).
    gw = gateway(start_collector, chdb, name, "--max-body", "200MiB", "--max-memory", "2GiB")
    big = ["x" * 950_000] * 75
    status, headers = post(f"{gw.url}/v1/logs", export(("first", ["small"]), ("second", big)))
    assert status == 503
    assert headers.get("retry-after") == "1"
    # A whole export that fits is taken, each resource once.
    status, _ = post(f"{gw.url}/v1/logs", export(("first", ["small"]), ("second", ["also"])))
    assert status == 200
    rows = wait_rows(chdb, name, 2)
    time.sleep(1.5)  # a batch of the refused export would have been sent by now
    rows = chdb.rows(f"SELECT ServiceName, Body FROM {name} ORDER BY Body")
    assert rows == [
        {"ServiceName": "second", "Body": "also"},
        {"ServiceName": "first", "Body": "small"},
    ]
