"""Every per-request cost of the collector is a bound, shown against a real
`timber collect` on 127.0.0.1: colliding OTLP attribute names, the decode
memory of OTLP bodies, idempotency keys across sources, and slow clients.
CPU and memory are read from /proc with generous bounds; no timing is
asserted beyond "within the timeout plus a margin"."""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from conftest import Collector

Start = Callable[..., Collector]
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def cpu_seconds(pid: int) -> float:
    """User and system CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match is not None
    return int(match.group(1))


def export(*records: LogRecord, service: str = "app") -> bytes:
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value=service))]},
                scope_logs=[ScopeLogs(log_records=list(records))],
            )
        ]
    )
    return request.SerializeToString()


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- colliding attribute names ------------------------------------------------------


def test_colliding_attribute_names_are_renamed_in_linear_time(start_collector: Start) -> None:
    """10,000 attributes named `dt` and 300 names `extra_dt`, `_extra_dt`, ...
    in one record: a rescan of every name per attribute and per `_` took
    about 25 s of CPU; the renaming is one pass. The record keeps every
    other name, and one `extra_dt` (with the first free number of `_`)
    holding the last `dt`, as a JSON reader of repeated keys would."""
    c = start_collector("--quiet")
    taken = [KeyValue(key="_" * i + "extra_dt", value=AnyValue(int_value=i)) for i in range(300)]
    dts = [KeyValue(key="dt", value=AnyValue(int_value=i)) for i in range(10_000)]
    body = export(LogRecord(time_unix_nano=1, attributes=dts[:5000] + taken + dts[5000:]))
    before = cpu_seconds(c.proc.pid)
    for _ in range(2):
        status, answer = post(c.port, "/v1/logs", body, PROTOBUF)
        assert status == 200, answer
    used = cpu_seconds(c.proc.pid) - before
    assert used < 5, f"two requests took {used:.1f} s of CPU"
    frames = c.frames("app")
    assert len(frames) == 2
    frame = frames[0]
    for i in range(300):
        assert frame["_" * i + "extra_dt"] == i
    assert frame["_" * 300 + "extra_dt"] == 9_999
    assert frame["dt"] == "1970-01-01T00:00:00.000000Z"
