"""`timber collect` as an OTLP/HTTP logs receiver (`POST /v1/logs`): the
official OpenTelemetry SDK and its OTLP/HTTP exporter log into a real
collector, in protobuf and in OTLP-JSON (built with protobuf's own
json_format, since the 1.45 HTTP exporter speaks protobuf only), and every
record must be stored as the frame timber's handler would have sent; timber's
own handler with destination='otlp' must store the same frames as its
destination='timber' does."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import threading
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import timber
from conftest import Collector

KEY = "otlp-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)


@pytest.fixture
def keyed(start_collector: Any) -> Collector:
    c: Collector = start_collector("--quiet", "--api-key", KEY)
    return c


class Capture(logging.Handler):
    """Keeps the records, to build the expected frames from."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def dt(created: float) -> str:
    # The SDK sends int(created * 1e9); the collector rounds to the microsecond.
    micros = (int(created * 1e9) + 500) // 1000
    t = datetime.datetime.fromtimestamp(micros // 10**6, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros % 10**6:06d}Z"


def micros(text: str) -> int:
    t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp()) * 10**6 + t.microsecond


LEVELS = {
    "DEBUG": "debug",
    "INFO": "info",
    "WARNING": "warn",
    "ERROR": "error",
    "CRITICAL": "critical",
}
STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def log_calls(logger: logging.Logger) -> tuple[int, int, int]:
    """The records every test logs; returns the span's trace id, span id and flags."""
    tracer = TracerProvider().get_tracer("t")
    logger.debug("debug %s", "arg")
    with tracer.start_as_current_span("request") as span:
        logger.info("placed", extra={"order": {"id": 7, "tags": ["x", "y"]}, "n": 3, "f": 1.5})
        logger.warning("careful", extra={"dt": "user field", "ok": True})
        try:
            {}["missing"]
        except KeyError:
            logger.exception("lookup failed")
        ctx = span.get_span_context()
    logger.critical("down", extra={"flag": False})
    return ctx.trace_id, ctx.span_id, int(ctx.trace_flags)


def expected(r: logging.LogRecord, ids: tuple[int, int, int], host: str) -> dict[str, Any]:
    """The frame a record sent by the SDK must become."""
    frame: dict[str, Any] = {
        "dt": dt(r.created),
        "level": LEVELS[r.levelname],
        "severity": int(r.levelno / 10),
        "message": r.getMessage(),
    }
    for k, v in vars(r).items():
        if k not in STANDARD:
            frame["extra_dt" if k == "dt" else k] = v
    if r.exc_info and r.exc_info[1] is not None:
        frame["error"] = {
            "name": r.exc_info[0].__name__ if r.exc_info[0] else "",
            "message": str(r.exc_info[1].args[0]),
            "backtrace": [],
            "stacktrace": frame_stacktrace_placeholder,
        }
    context: dict[str, Any] = {
        "runtime": {
            "function": r.funcName,
            "file": r.pathname,
            "line": r.lineno,
            "thread_id": None,
            "thread_name": None,
            "logger_name": r.name,
        },
        "system": {"pid": os.getpid(), "process_name": None, "hostname": host},
    }
    if r.getMessage() in ("placed", "careful", "lookup failed"):
        context["trace"] = {
            "trace_id": f"{ids[0]:032x}",
            "span_id": f"{ids[1]:016x}",
            "trace_flags": ids[2],
        }
    frame["context"] = context
    return frame


# Stands for the traceback text, checked on its own (its line numbers are the test's).
frame_stacktrace_placeholder = "<traceback>"


def check_stored(stored: list[dict[str, Any]], records: list[logging.LogRecord], ids: Any) -> None:
    assert len(stored) == len(records) == 5
    for frame, record in zip(stored, records, strict=True):
        if "error" in frame:
            trace = frame["error"]["stacktrace"]
            assert trace.startswith("Traceback (most recent call last):")
            assert trace.rstrip().endswith("KeyError: 'missing'")
            frame["error"]["stacktrace"] = frame_stacktrace_placeholder
        assert frame == expected(record, ids, "box-1")


def sdk_provider(*exporters: Any) -> tuple[LoggerProvider, LoggingHandler]:
    resource = Resource.create(
        {"service.name": "shop api", "host.name": "box-1", "process.pid": os.getpid()}
    )
    provider = LoggerProvider(resource=resource)
    for e in exporters:
        provider.add_log_record_processor(SimpleLogRecordProcessor(e))
    with warnings.catch_warnings():
        # The SDK's handler announces its move to another package.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=provider)
    return provider, handler


@pytest.fixture
def capture(logger: logging.Logger) -> Iterator[Capture]:
    c = Capture()
    logger.addHandler(c)
    yield c


def test_sdk_exporter_protobuf_gzip(
    keyed: Collector, logger: logging.Logger, capture: Capture
) -> None:
    exporter = OTLPLogExporter(
        endpoint=f"{keyed.url}/v1/logs", headers=AUTH, compression=Compression.Gzip
    )
    provider, handler = sdk_provider(exporter)
    logger.addHandler(handler)
    ids = log_calls(logger)
    provider.shutdown()
    # "shop api" is no file name: the source id keeps what it can.
    check_stored(keyed.frames("shop_api"), capture.records, ids)
    assert sorted(p.name for p in keyed.out.iterdir()) == ["shop_api.ndjson"]


def otlp_json(request: ExportLogsServiceRequest) -> bytes:
    """OTLP-JSON: proto3's JSON with enums as integers and ids in hex."""
    body = json_format.MessageToDict(request, use_integers_for_enums=True)
    for rl in body["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for rec in sl["logRecords"]:
                for k in ("traceId", "spanId"):
                    if k in rec:
                        rec[k] = base64.b64decode(rec[k]).hex()
    return json.dumps(body).encode()


def test_otlp_json_deflate(keyed: Collector, logger: logging.Logger, capture: Capture) -> None:
    memory = InMemoryLogRecordExporter()
    provider, handler = sdk_provider(memory)
    logger.addHandler(handler)
    ids = log_calls(logger)
    request = encode_logs(list(memory.get_finished_logs()))
    body = otlp_json(request)
    assert b'"traceId": "' + f"{ids[0]:032x}".encode() in body
    status, answer = keyed.post(
        "/v1/logs",
        zlib.compress(body),
        "application/json",
        {**AUTH, "Content-Encoding": "deflate"},
    )
    assert (status, json.loads(answer)) == (200, {})
    check_stored(keyed.frames("shop_api"), capture.records, ids)
    provider.shutdown()


def test_answers_and_refusals(keyed: Collector) -> None:
    request = ExportLogsServiceRequest()
    rec = request.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.string_value = "one"
    rec.time_unix_nano = 1
    proto = request.SerializeToString()
    ok = keyed.post("/v1/logs", proto, "application/x-protobuf", AUTH)
    assert ok[0] == 200
    assert ExportLogsServiceResponse.FromString(ok[1]) == ExportLogsServiceResponse()
    assert keyed.frames("otlp")[0]["message"] == "one"
    assert keyed.post("/v1/logs", proto, "application/x-protobuf")[0] == 401
    assert keyed.post("/v1/logs", b"\x0a\xff", "application/x-protobuf", AUTH)[0] == 400
    assert keyed.post("/v1/logs", b"{", "application/json", AUTH)[0] == 400
    assert keyed.post("/v1/logs", proto, "application/msgpack", AUTH)[0] == 415
    assert keyed.post("/v1/logs", b"", "application/x-protobuf", AUTH)[0] == 200
    # A replayed batch is answered 200 and stored once.
    again = {**AUTH, "Idempotency-Key": "batch-1"}
    for _ in range(2):
        assert keyed.post("/v1/logs", proto, "application/x-protobuf", again)[0] == 200
    assert [f["message"] for f in keyed.frames("otlp")] == ["one", "one"]


def test_body_limit_applies(start_collector: Any) -> None:
    c: Collector = start_collector("--quiet", "--max-body", "1KiB")
    request = ExportLogsServiceRequest()
    rec = request.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.string_value = "x" * 2000
    assert c.post("/v1/logs", request.SerializeToString(), "application/x-protobuf")[0] == 413
    assert c.frames("otlp") == []


def test_timber_handler_via_otlp_stores_what_it_sends_direct(
    collector: Collector, logger: logging.Logger
) -> None:
    direct = timber.TimberHandler(api_key="k", source_id="direct", host=collector.url)
    via = timber.TimberHandler(destination="otlp", host=collector.url, service_name="via-otlp")
    logger.addHandler(direct)
    logger.addHandler(via)
    ids = log_calls(logger)
    direct.flush()
    via.flush()
    d, v = collector.frames("direct"), collector.frames("via-otlp")
    assert [f["message"] for f in v] == ["debug arg", "placed", "careful", "lookup failed", "down"]
    assert len(d) == len(v)
    for a, b in zip(d, v, strict=True):
        # The OTLP path keeps the traceback as text, not as frames, and has
        # no process name; the rest is the same frame.
        assert b["error"]["stacktrace"].startswith("Traceback") if "error" in a else True
        if "error" in a:
            assert (b["error"]["name"], b["error"]["message"]) == ("KeyError", "missing")
            assert a["error"]["name"] == "KeyError"
            del a["error"], b["error"]
        assert a["context"]["system"].pop("process_name") is not None
        assert b["context"]["system"].pop("process_name") is None
        assert b["context"]["runtime"]["thread_id"] == str(threading.get_ident())
        # OTLP's code.file.path is the full path; the frame's file its name.
        assert os.path.basename(b["context"]["runtime"].pop("file")) == a["context"]["runtime"].pop(
            "file"
        )
        # Python rounds the float time to the microsecond, the SDK's mapping
        # truncates it to the nanosecond first: at most 1 µs apart.
        assert abs(micros(b.pop("dt")) - micros(a.pop("dt"))) <= 1
        assert b == a
    assert v[1]["context"]["trace"]["trace_id"] == f"{ids[0]:032x}"
    direct.close()
    via.close()
