"""destination='otlp': requests decoded with the official opentelemetry-proto
package (and OTLP-JSON with protobuf's own JSON parser), the standard OTEL_*
variables, the specification's retry rules, and a differential test against
the official OpenTelemetry SDK logging the same calls into the same
receiver."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

import timber
from fault_server import FaultServer, Step

OTEL_VARS = [k for k in os.environ if k.startswith("OTEL_")]


@pytest.fixture
def receiver() -> Iterator[FaultServer]:
    s = FaultServer(default_status=200)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in OTEL_VARS:
        monkeypatch.delenv(k)


def decode(body: bytes, json: bool = False) -> ExportLogsServiceRequest:
    if json:
        return json_format.Parse(body, ExportLogsServiceRequest())
    return ExportLogsServiceRequest.FromString(body)


def records(server: FaultServer, agent: str = "timber") -> list[tuple[str, LogRecord]]:
    """(scope name, record) of every request whose user agent starts with `agent`."""
    out = []
    for r in server.requests:
        if not r.headers.get("user-agent", "").lower().startswith(agent.lower()):
            continue
        json = r.headers.get("content-type") == "application/json"
        for rl in decode(r.body, json).resource_logs:
            for sl in rl.scope_logs:
                out.extend((sl.scope.name, rec) for rec in sl.log_records)
    return out


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind)


def attrs(rec: LogRecord) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in rec.attributes}


def otlp_handler(host: str, **kw: Any) -> timber.TimberHandler:
    return timber.TimberHandler(destination="otlp", host=host, **kw)


def test_protobuf_request_as_the_specification_has_it(
    receiver: FaultServer, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    h = otlp_handler(receiver.host)
    logger.addHandler(h)
    with timber.context(user={"id": 123}):
        logger.info(
            "Order #1234 placed, total: $520.23",
            extra={"order_placed": {"id": 1234, "total": 520.23}},
        )
    try:
        raise ValueError("bad total")
    except ValueError:
        logger.exception("failed")
    h.flush()
    [request] = receiver.requests
    assert request.path == "/v1/logs"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["content-encoding"] == "gzip"
    [rl] = decode(request.body).resource_logs
    resource = {kv.key: value(kv.value) for kv in rl.resource.attributes}
    assert resource["service.name"] == "checkout"
    assert resource["deployment.environment"] == "prod"
    assert resource["process.pid"] == os.getpid()
    assert resource["telemetry.sdk.name"] == "timber"
    # One scope per logger, both records in it.
    [scope] = rl.scope_logs
    assert scope.scope.name == logger.name
    placed, failed = scope.log_records
    assert placed.body.string_value == "Order #1234 placed, total: $520.23"
    assert (placed.severity_number, placed.severity_text) == (9, "INFO")
    a = attrs(placed)
    assert a["order_placed"] == {"id": 1234, "total": 520.23}
    assert a["user"] == {"id": 123}
    assert a["code.file.path"] == __file__
    assert a["code.function.name"] == "test_protobuf_request_as_the_specification_has_it"
    assert a["thread.id"] == threading.get_ident()
    assert a["thread.name"] == "MainThread"
    assert placed.time_unix_nano > 0 and placed.observed_time_unix_nano >= placed.time_unix_nano
    f = attrs(failed)
    assert (failed.severity_number, failed.severity_text) == (17, "ERROR")
    assert f["exception.type"] == "ValueError"
    assert f["exception.message"] == "bad total"
    assert f["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert f["exception.stacktrace"].rstrip().endswith("ValueError: bad total")
    h.close()


def test_otlp_json_with_only_the_environment(
    receiver: FaultServer, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.host)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Basic%20abc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
    h = timber.TimberHandler(destination="otlp")
    logger.addHandler(h)
    logger.warning("big %d", 2**40, extra={"n": 2**62, "ratio": 0.5, "ok": True, "tags": ["a"]})
    h.flush()
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/json"
    assert "content-encoding" not in request.headers
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["authorization"] == "Basic abc"
    [(scope, rec)] = records(receiver)
    assert scope == logger.name
    assert (rec.severity_number, rec.severity_text) == (13, "WARN")
    assert rec.body.string_value == f"big {2**40}"
    a = attrs(rec)
    assert (a["n"], a["ratio"], a["ok"], a["tags"]) == (2**62, 0.5, True, ["a"])
    h.close()


def test_environment_errors_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match=r"^OTEL_EXPORTER_OTLP_PROTOCOL .*gRPC is not supported"):
        timber.TimberHandler(destination="otlp")


@pytest.mark.parametrize(
    ("status", "retried"), [(429, True), (503, True), (500, False), (400, False)]
)
def test_retries_only_what_the_specification_allows(
    receiver: FaultServer, logger: logging.Logger, status: int, retried: bool
) -> None:
    receiver.add_script([Step(status, retry_after="0")])
    h = otlp_handler(receiver.host, backoff_base=0.05, backoff_max=0.1)
    logger.addHandler(h)
    logger.info("once")
    h.flush()
    s = h.stats()
    if retried:
        assert len(receiver.requests) == 2 and s["sent"] == 1
    else:
        assert len(receiver.requests) == 1
        assert s["dropped_by_reason"]["rejected"] == 1
    h.close()


def test_partial_success_counts_the_rejected_records(
    receiver: FaultServer, logger: logging.Logger
) -> None:
    answer = ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 2
    answer.partial_success.error_message = "timestamp too old"
    receiver.add_script([Step(200, body=answer.SerializeToString())])
    h = otlp_handler(receiver.host, buffer_capacity=5)
    logger.addHandler(h)
    for i in range(5):
        logger.info("r%d", i)
    h.flush()
    s = h.stats()
    assert len(receiver.requests) == 1
    assert (s["sent"], s["dropped_by_reason"]["rejected"]) == (3, 2)
    h.close()


def test_trace_ids_on_every_destination(
    receiver: FaultServer, server: FaultServer, logger: logging.Logger
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    otlp = otlp_handler(receiver.host)
    frames = timber.TimberHandler(api_key="k", source_id="s", host=server.host)
    logger.addHandler(otlp)
    logger.addHandler(frames)
    with tracer.start_as_current_span("work") as span:
        logger.info("inside")
        ctx = span.get_span_context()
    logger.info("outside")
    otlp.flush()
    frames.flush()
    inside, outside = (rec for _, rec in records(receiver))
    assert inside.trace_id.hex() == f"{ctx.trace_id:032x}"
    assert inside.span_id.hex() == f"{ctx.span_id:016x}"
    assert inside.flags == int(ctx.trace_flags)
    assert outside.trace_id == b""
    f_inside, f_outside = server.frames
    assert f_inside["context"]["trace"] == {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "trace_flags": int(ctx.trace_flags),
    }
    assert "trace" not in f_outside["context"]
    otlp.close()
    frames.close()


def test_same_calls_as_the_official_sdk(receiver: FaultServer, logger: logging.Logger) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider

    provider = LoggerProvider()
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{receiver.host}/v1/logs"))
    )
    with warnings.catch_warnings():
        # The SDK's handler announces its move to another package.
        warnings.simplefilter("ignore", DeprecationWarning)
        sdk_handler = LoggingHandler(logger_provider=provider)
    ours = otlp_handler(receiver.host)
    logger.addHandler(sdk_handler)
    logger.addHandler(ours)
    logger.setLevel(logging.DEBUG)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("request"):
        logger.debug("debug %s", "arg")
        logger.info("info", extra={"order": {"id": 7, "tags": ["x", "y"]}, "n": 3, "f": 1.5})
        logger.warning("warn")
        logger.log(25, "custom level")
        logger.critical("critical", extra={"flag": False})
        try:
            {}["missing"]
        except KeyError:
            logger.exception("lookup failed")
    ours.flush()
    provider.force_flush()
    provider.shutdown()
    theirs = records(receiver, "OTel-OTLP-Exporter-Python")
    mine = records(receiver, "timber")
    assert len(theirs) == len(mine) == 6
    for (t_scope, t), (m_scope, m) in zip(theirs, mine, strict=True):
        assert m_scope == t_scope
        assert m.severity_number == t.severity_number
        assert m.severity_text == t.severity_text
        assert m.body == t.body
        assert m.time_unix_nano == t.time_unix_nano
        assert (m.trace_id, m.span_id, m.flags) == (t.trace_id, t.span_id, t.flags)
        ta, ma = attrs(t), attrs(m)
        # Every attribute the SDK sends, ours sends with the same value.
        for key, v in ta.items():
            assert ma.get(key) == v, (key, ma.get(key), v)
    ours.close()


def test_trace_ids_from_a_record_factory(server: FaultServer) -> None:
    """opentelemetry-instrumentation-logging puts otelTraceID/otelSpanID on
    each record when it is made: they are the record's trace (read even
    where the span is no longer current), never extras."""
    from opentelemetry.instrumentation.logging import LoggingInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    LoggingInstrumentor().instrument(
        set_logging_format=False, inject_trace_context=True, enable_log_auto_instrumentation=False
    )
    try:
        log = logging.getLogger("factory")
        with tracer.start_as_current_span("made here") as span:
            ctx = span.get_span_context()
            record = log.makeRecord("factory", logging.INFO, "f.py", 1, "made in a span", (), None)
        assert record.otelTraceID == f"{ctx.trace_id:032x}"  # type: ignore[attr-defined]
    finally:
        LoggingInstrumentor().uninstrument()
    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host)
    h.handle(record)  # outside the span now
    h.flush()
    [frame] = server.frames
    assert frame["context"]["trace"]["trace_id"] == f"{ctx.trace_id:032x}"
    assert frame["context"]["trace"]["span_id"] == f"{ctx.span_id:016x}"
    assert not {"otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName"} & set(frame)
    h.close()


def test_redaction_applies_to_otlp_attributes(
    receiver: FaultServer, logger: logging.Logger
) -> None:
    h = otlp_handler(receiver.host, redact="password,api_key")
    logger.addHandler(h)
    with timber.context(auth={"api_key": "k-123"}):
        logger.info("x", extra={"password": "p-456", "nested": {"list": [{"PASSWORD": "p-789"}]}})
    h.flush()
    [request] = receiver.requests
    for secret in (b"k-123", b"p-456", b"p-789"):
        assert secret not in request.body
    [(_, rec)] = records(receiver)
    a = attrs(rec)
    assert a["password"] == "[REDACTED]"
    assert a["nested"] == {"list": [{"PASSWORD": "[REDACTED]"}]}
    assert a["auth"] == {"api_key": "[REDACTED]"}
    h.close()
