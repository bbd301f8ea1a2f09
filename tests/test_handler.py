"""TimberHandler against real HTTP servers on 127.0.0.1: configuration,
batching, delivery exactly once, retries, drops and bounded waits."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import socket
import sys
import time
from contextlib import redirect_stdout
from typing import Any

import pytest

import timber
from fault_server import FaultServer, Step


def handler(server: FaultServer, **kw: Any) -> timber.TimberHandler:
    kw.setdefault("flush_interval", 0.2)
    return timber.TimberHandler(api_key="key", source_id="src", host=server.host, **kw)


def test_twenty_thousand_records_arrive_exactly_once(
    server: FaultServer, logger: logging.Logger
) -> None:
    h = handler(server)
    logger.addHandler(h)
    for i in range(20_000):
        logger.info("record %d", i, extra={"n": i})
    assert h._engine.flush(30.0)
    ns = sorted(f["n"] for f in server.frames)
    assert ns == list(range(20_000))
    assert all(len(r.frames) <= 1000 for r in server.requests)
    assert h.stats()["sent"] == 20_000
    assert h.dropcount == 0


def test_batches_follow_buffer_capacity_and_stay_under_one_megabyte(
    server: FaultServer, logger: logging.Logger
) -> None:
    h = handler(server, buffer_capacity=7)
    logger.addHandler(h)
    for i in range(30):
        logger.info("small %d", i)
    big = "x" * 100_000
    for i in range(25):
        logger.info("big", extra={"payload": big, "i": i})
    h.flush()
    sizes = [len(r.frames) for r in server.requests]
    assert sum(sizes) == 55
    assert max(sizes) <= 7
    assert all(r.size <= 1_000_000 for r in server.requests)


def test_flush_interval_sends_a_partial_batch(server: FaultServer, logger: logging.Logger) -> None:
    h = handler(server, flush_interval=0.1)
    logger.addHandler(h)
    logger.warning("lonely")
    [frame] = server.wait_for_frames(1, timeout=10)
    assert frame["level"] == "warn"


def test_credentials_from_environment(
    server: FaultServer, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIMBER_API_KEY", "env-key")
    monkeypatch.setenv("TIMBER_SOURCE_ID", "env-src")
    monkeypatch.setenv("TIMBER_HOST", server.host)
    h = timber.TimberHandler(level=logging.WARNING)
    logger.addHandler(h)
    logger.info("filtered out")
    logger.error("kept")
    h.flush()
    assert [f["message"] for f in server.frames] == ["kept"]
    [req] = server.requests
    assert req.path == "/sources/env-src/frames"
    assert req.headers["authorization"] == "Bearer env-key"


def test_missing_credentials_name_argument_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIMBER_API_KEY", raising=False)
    monkeypatch.delenv("TIMBER_SOURCE_ID", raising=False)
    with pytest.raises(ValueError, match=r"api_key.*TIMBER_API_KEY"):
        timber.TimberHandler(source_id="s")
    with pytest.raises(ValueError, match=r"source_id.*TIMBER_SOURCE_ID"):
        timber.TimberHandler(api_key="k")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"buffer_capacity": 0},
        {"flush_interval": -1},
        {"buffer_capacity": "10"},
        {"max_buffer_bytes": 10},
        {"host": "logs.example"},
        {"timeout": float("nan")},
    ],
)
def test_bad_options_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        timber.TimberHandler(api_key="k", source_id="s", **kwargs)


def test_default_host_is_the_documented_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIMBER_HOST", raising=False)
    h = timber.TimberHandler(api_key="k", source_id="s")
    assert h.host == "https://logs.timber.io"
    h.close()


def test_dict_config_handler_and_formatter(server: FaultServer) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"timber": {"()": "timber.TimberFormatter"}},
            "handlers": {
                "timber": {
                    "level": "DEBUG",
                    "class": "timber.TimberHandler",
                    "api_key": "YOUR_API_KEY",
                    "source_id": "YOUR_SOURCE_ID",
                    "host": server.host,
                },
                "stdout": {
                    "level": "DEBUG",
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "timber",
                },
            },
            "loggers": {"my-app": {"handlers": ["timber", "stdout"], "level": "DEBUG"}},
        }
    )
    app = logging.getLogger("my-app")
    out = io.StringIO()
    stream_handler = next(h for h in app.handlers if isinstance(h, logging.StreamHandler))
    stream_handler.setStream(out)
    try:
        app.debug("configured", extra={"event": {"ok": True}})
        timber_handler = next(h for h in app.handlers if isinstance(h, timber.TimberHandler))
        timber_handler.flush()
        [shipped] = server.frames
        printed = json.loads(out.getvalue())
        assert printed == shipped
        assert shipped["event"] == {"ok": True}
    finally:
        for h in list(app.handlers):
            app.removeHandler(h)
            h.close()


def test_stdout_inline_snippet() -> None:
    logger = logging.getLogger("stdout-inline")
    logger.setLevel(logging.INFO)
    out = io.StringIO()
    with redirect_stdout(out):
        stream_handler = logging.StreamHandler(sys.stdout)
    formatter = timber.Formatter()
    stream_handler.setFormatter(formatter)
    logger.addHandler(stream_handler)
    try:
        logger.info("line one\nline two")
    finally:
        logger.removeHandler(stream_handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "line one\nline two"


def test_a_single_server_error_or_reset_loses_nothing(
    server: FaultServer, logger: logging.Logger
) -> None:
    server.add_script([500, Step("reset"), 503])
    h = handler(server, buffer_capacity=10)
    logger.addHandler(h)
    for i in range(30):
        logger.info("r%d", i)
    h.flush()
    assert sorted(int(f["message"][1:]) for f in server.frames) == list(range(30))
    assert h.stats()["retries"] >= 3


def test_refused_connection_is_retried_until_the_server_is_up(logger: logging.Logger) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = timber.TimberHandler(
        api_key="k", source_id="s", host=f"http://127.0.0.1:{port}", flush_interval=0.1
    )
    logger.addHandler(h)
    logger.info("before the server exists")
    import time

    time.sleep(0.5)
    server = FaultServer(port_wanted=port)
    try:
        assert h._engine.flush(30.0)
        assert [f["message"] for f in server.frames] == ["before the server exists"]
    finally:
        server.close()


def test_client_errors_are_not_retried(server: FaultServer, logger: logging.Logger) -> None:
    server.add_script([400])
    h = handler(server)
    logger.addHandler(h)
    logger.info("refused")
    h.flush()
    logger.info("accepted")
    h.flush()
    assert [r.status for r in server.requests] == [400, 202]
    stats = h.stats()
    assert stats["dropped_by_reason"]["rejected"] == 1
    assert stats["sent"] == 1


def test_full_buffer_drops_and_counts_without_blocking(
    server: FaultServer, logger: logging.Logger
) -> None:
    server.add_script([Step("hang", seconds=3)] * 4)
    h = handler(server, max_buffer_bytes=2_000_000, buffer_capacity=100, timeout=1)
    logger.addHandler(h)
    payload = "y" * 10_000
    started = time.monotonic()
    for i in range(400):
        logger.info("fill", extra={"p": payload, "i": i})
    # Not a speed check: waiting for room would take the hang's 3 s or more.
    assert time.monotonic() - started < 2.0
    assert h.dropcount > 0
    assert h.stats()["dropped_by_reason"]["buffer_full"] == h.dropcount


def test_drop_extra_events_false_waits_for_room_and_loses_nothing(
    server: FaultServer, logger: logging.Logger
) -> None:
    server.add_script([503, 503])
    h = handler(server, max_buffer_bytes=2_000_000, buffer_capacity=50, drop_extra_events=False)
    logger.addHandler(h)
    payload = "z" * 10_000
    for i in range(400):
        logger.info("wait", extra={"p": payload, "i": i})
    assert h._engine.flush(60.0)
    assert sorted(f["i"] for f in server.frames) == list(range(400))
    assert h.dropcount == 0


def test_flush_and_close_are_bounded_when_the_endpoint_hangs(
    server: FaultServer, logger: logging.Logger
) -> None:
    server.add_script([Step("hang", seconds=20)] * 3)
    h = handler(server, flush_timeout=0.5, shutdown_timeout=0.5, timeout=30)
    logger.addHandler(h)
    logger.info("stuck")
    assert h._engine.flush(0.3) is False
    h.flush()
    logger.removeHandler(h)
    h.close()
    assert h._engine.closed
    logger.info("after close is ignored")


def test_records_after_close_are_dropped_not_raised(server: FaultServer) -> None:
    h = handler(server)
    h.close()
    record = logging.getLogger("x").makeRecord("x", 20, "f", 1, "late", (), None)
    h.handle(record)
    assert h.stats()["dropped_by_reason"]["shutdown"] == 1


def test_raise_exceptions_surfaces_delivery_problems_at_flush(
    server: FaultServer, logger: logging.Logger
) -> None:
    server.add_script([401])
    h = handler(server, raise_exceptions=True)
    logger.addHandler(h)
    logger.info("refused")
    with pytest.raises(timber.DeliveryError, match="rejected"):
        h.flush()
    logger.info("accepted")
    h.flush()  # nothing new went wrong
    assert [r.status for r in server.requests] == [401, 202]


def test_without_raise_exceptions_flush_never_raises(
    server: FaultServer, logger: logging.Logger
) -> None:
    server.add_script([401])
    h = handler(server)
    logger.addHandler(h)
    logger.info("refused")
    h.flush()
    assert h.stats()["dropped_by_reason"]["rejected"] == 1


def test_retry_after_zero_is_not_a_busy_loop(server: FaultServer, logger: logging.Logger) -> None:
    server.add_script([Step(503, retry_after="0")] * 1000)
    h = handler(server, retry_timeout=1.0, backoff_base=0.1, backoff_max=0.2)
    logger.addHandler(h)
    logger.info("throttled")
    h._engine.flush(10.0)
    # Backing off 0.1-0.2 s for 1 s: a handful of attempts, not thousands.
    assert len(server.requests) < 30


def test_record_bound_drops_and_counts(server: FaultServer, logger: logging.Logger) -> None:
    server.add_script([Step("hang", seconds=3)] * 4)
    h = handler(server, buffer_capacity=10, max_buffer_records=30, timeout=1)
    logger.addHandler(h)
    for i in range(100):
        logger.info("n%d", i)
    assert h.dropcount >= 70
    assert h.stats()["buffered_records"] <= 30


def test_python_code_that_mutates_the_record_never_raises(
    server: FaultServer, logger: logging.Logger
) -> None:
    class Sneaky:
        def __init__(self, record: logging.LogRecord, value: float) -> None:
            self.record = record
            self.value = value

        def __float__(self) -> float:
            for i in range(50):
                setattr(self.record, f"added_{i}", i)
            return self.value

        def __index__(self) -> int:
            return int(self.__float__())

    def sneaky_filter(record: logging.LogRecord) -> bool:
        record.created = Sneaky(record, record.created)  # type: ignore[assignment]
        record.process = Sneaky(record, 4242)  # type: ignore[assignment]
        return True

    h = handler(server)
    h.addFilter(sneaky_filter)
    logger.addHandler(h)
    logger.info("mutated while read")
    h.flush()
    [frame] = server.frames
    assert frame["message"] == "mutated while read"


@pytest.mark.parametrize(
    "option", ["flush_timeout", "shutdown_timeout", "retry_timeout", "timeout", "flush_interval"]
)
def test_huge_durations_are_refused_by_name(server: FaultServer, option: str) -> None:
    with pytest.raises(ValueError, match=f"^{option} must be a number of seconds .* up to"):
        handler(server, **{option: float(sys.maxsize)})


def test_formatter_from_dict_config_class_form(server: FaultServer) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"t": {"class": "timber.TimberFormatter", "format": "%(message)s"}},
            "handlers": {"s": {"class": "logging.StreamHandler", "formatter": "t"}},
            "loggers": {"class-form": {"handlers": ["s"], "level": "INFO"}},
        }
    )
    lg = logging.getLogger("class-form")
    out = io.StringIO()
    lg.handlers[0].setStream(out)  # type: ignore[attr-defined]
    try:
        lg.info("via class", extra={"event": {"x": 1}})
    finally:
        lg.handlers.clear()
    frame = json.loads(out.getvalue())
    assert frame["message"] == "via class" and frame["event"] == {"x": 1}


def test_a_record_too_large_for_a_request_is_cut_not_lost(
    server: FaultServer, logger: logging.Logger
) -> None:
    h = handler(server)
    logger.addHandler(h)
    logger.info("huge", extra={"blob": "x" * 3_000_000, "keep": {"id": 1}})
    h.flush()
    [frame] = server.frames
    assert frame["keep"] == {"id": 1}
    assert frame["blob"].endswith("… [truncated 2983616 bytes]")
    assert all(r.size <= 1_000_000 for r in server.requests)
    assert h.stats()["dropped"] == 0
