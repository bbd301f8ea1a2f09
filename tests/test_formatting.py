"""How timber fits the standard library's own machinery: a formatter set on
the handler makes the message; the formatter's json_default and json_encoder
apply to context values too; behind a QueueListener the caller's context is
kept by TimberQueueHandler."""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import queue
from typing import Any

import timber
from fault_server import FaultServer


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents


def money_default(obj: Any) -> Any:
    if isinstance(obj, Money):
        return {"cents": obj.cents}
    raise TypeError(type(obj).__name__)


class MoneyEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, Money):
            return f"${o.cents / 100:.2f}"
        return super().default(o)


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    r = logging.LogRecord("app", logging.INFO, "f.py", 1, msg, args, None)
    r.__dict__.update(extra)
    return r


def test_a_formatter_on_the_handler_makes_the_message(
    server: FaultServer, logger: logging.Logger
) -> None:
    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host)
    h.setFormatter(logging.Formatter("%(levelname)s [%(name)s] %(message)s"))
    logger.addHandler(h)
    logger.info("hello %s", "world", extra={"order": {"id": 1}})
    h.flush()
    [frame] = server.frames
    assert frame["message"] == f"INFO [{logger.name}] hello world"
    # The rest of the frame is built as always.
    assert frame["order"] == {"id": 1}
    assert frame["level"] == "info"
    h.close()


def test_a_formatter_from_dict_config(server: FaultServer) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"short": {"format": "<%(message)s>"}},
            "handlers": {
                "timber": {
                    "class": "timber.TimberHandler",
                    "api_key": "k",
                    "source_id": "s",
                    "host": server.host,
                    "formatter": "short",
                }
            },
            "loggers": {"configured": {"handlers": ["timber"], "level": "INFO"}},
        }
    )
    log = logging.getLogger("configured")
    try:
        log.info("x")
        h = log.handlers[0]
        h.flush()
        assert [f["message"] for f in server.frames] == ["<x>"]
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()


def test_a_failing_formatter_falls_back_to_the_message(
    server: FaultServer, logger: logging.Logger
) -> None:
    class Broken(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            raise RuntimeError("boom")

    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host)
    h.setFormatter(Broken())
    logger.addHandler(h)
    logger.info("still %s", "sent")
    h.flush()
    assert [f["message"] for f in server.frames] == ["still sent"]
    h.close()


def test_json_default_applies_to_context_values() -> None:
    ctx = timber.TimberContext()
    f = timber.TimberFormatter(context=ctx, json_default=money_default)
    with ctx(cart={"total": Money(52023)}):
        line = f.format(record("paid", price=Money(100)))
    frame = json.loads(line)
    assert frame["price"] == {"cents": 100}
    assert frame["context"]["cart"] == {"total": {"cents": 52023}}
    # Without a default, timber's own conversion: str(obj).
    plain = timber.TimberFormatter(context=ctx)
    with ctx(cart={"total": Money(1)}):
        frame = json.loads(plain.format(record("paid")))
    assert frame["context"]["cart"]["total"].startswith("<")


def test_json_encoder_applies_to_extras_and_context_values() -> None:
    ctx = timber.TimberContext()
    f = timber.TimberFormatter(context=ctx, json_encoder=MoneyEncoder)
    with ctx(cart={"total": Money(52023)}):
        frame = json.loads(f.format(record("paid", price=Money(100), dt="mine")))
    assert frame["price"] == "$1.00"
    assert frame["context"]["cart"] == {"total": "$520.23"}
    assert frame["extra_dt"] == "mine"
    assert list(frame)[:4] == ["dt", "level", "severity", "message"]
    assert frame["context"]["runtime"]["logger_name"] == "app"


def test_queue_listener_keeps_the_callers_context(
    server: FaultServer, logger: logging.Logger
) -> None:
    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host)
    q: queue.Queue[logging.LogRecord] = queue.Queue()
    listener = logging.handlers.QueueListener(q, h)
    listener.start()
    qh = timber.TimberQueueHandler(q)
    logger.addHandler(qh)
    try:
        with timber.context(request={"id": "r1"}):
            logger.info("inside")
        logger.info("outside")
    finally:
        listener.stop()
    h.flush()
    frames = {f["message"]: f for f in server.frames}
    assert frames["inside"]["context"]["request"] == {"id": "r1"}
    assert "request" not in frames["outside"]["context"]
    assert "_timber_context" not in frames["inside"]
    h.close()


SECRETS = {"password": "hunter2", "Authorization": "Bearer s3cret"}


def test_redacted_keys_never_leave_the_process(server: FaultServer, logger: logging.Logger) -> None:
    h = timber.TimberHandler(
        api_key="k", source_id="s", host=server.host, redact=["password", "authorization"]
    )
    logger.addHandler(h)
    with timber.context(request={"headers": {"Authorization": SECRETS["Authorization"]}}):
        logger.info(
            "login",
            extra={"user": {"name": "ann", "password": SECRETS["password"]}, "PASSWORD": "x"},
        )
    h.flush()
    [request] = server.requests
    assert b"hunter2" not in request.body and b"s3cret" not in request.body
    [frame] = server.frames
    assert frame["user"] == {"name": "ann", "password": "[REDACTED]"}
    assert frame["PASSWORD"] == "[REDACTED]"
    assert frame["context"]["request"]["headers"] == {"Authorization": "[REDACTED]"}
    h.close()


def test_redaction_in_the_formatter_and_from_dict_config() -> None:
    f = timber.TimberFormatter(redact=["password"])
    frame = json.loads(f.format(record("x", creds={"Password": "p", "user": "u"})))
    assert frame["creds"] == {"Password": "[REDACTED]", "user": "u"}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "t": {
                    "class": "timber.TimberHandler",
                    "api_key": "k",
                    "source_id": "s",
                    "host": "http://127.0.0.1:9",
                    "redact": ["password", "token"],
                }
            },
            "loggers": {"redacting": {"handlers": ["t"]}},
        }
    )
    h = logging.getLogger("redacting").handlers[0]
    try:
        assert h.redact == ["password", "token"]  # type: ignore[attr-defined]
    finally:
        logging.getLogger("redacting").removeHandler(h)
        h.close()
