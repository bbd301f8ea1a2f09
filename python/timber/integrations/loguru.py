"""loguru: ``sink(handler)`` turns each loguru record into a
``logging.LogRecord`` built from its fields (not loguru's formatted string,
and not the nested ``extra['extra']`` loguru's standard handler sink makes)
and hands it to the TimberHandler.

Does not import loguru.
"""

from __future__ import annotations

import atexit
import logging
import sys
from collections.abc import Callable
from typing import Any

from timber.handler import TimberHandler
from timber.integrations._extra import safe_extra

__all__ = ["sink", "to_record"]


def sink(handler: TimberHandler) -> Callable[[Any], None]:
    """A loguru sink: ``logger.add(sink(handler), format="{message}")``.

    Bound ``extra`` fields become top-level fields, as ``extra=`` does in
    ``logging``. Records below ``handler.level`` are skipped. With
    ``enqueue=True``, records still queued at interpreter exit are handed
    over before timber closes its handlers.
    """
    if not isinstance(handler, TimberHandler):
        raise ValueError(f"handler must be a timber.TimberHandler, got {handler!r}")

    def write(message: Any) -> None:
        record = to_record(message.record)
        if record.levelno >= handler.level:
            handler.handle(record)

    # Registered after loguru's and timber's own exit hooks (both exist by
    # the time a sink is made), so it runs before them: an enqueued record
    # reaches the handler while the handler is still open. Once, at the
    # latest position.
    atexit.unregister(_drain_loguru)
    atexit.register(_drain_loguru)
    return write


def to_record(loguru_record: dict[str, Any]) -> logging.LogRecord:
    """A ``logging.LogRecord`` with the fields of a loguru record."""
    r = loguru_record
    exception = r.get("exception")
    exc_info: Any = None
    if exception is not None and exception.type is not None:
        # With enqueue=True the traceback is gone: loguru cannot pickle it.
        exc_info = (exception.type, exception.value, exception.traceback)
    level = r["level"]
    file = r["file"]
    record = logging.LogRecord(
        name=r["name"] or "",
        level=level.no,
        pathname=file.path,
        lineno=r["line"],
        msg=r["message"],
        args=None,
        exc_info=exc_info,
        func=r["function"],
    )
    record.levelname = level.name
    created = r["time"].timestamp()
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.filename = file.name
    record.module = r["module"]
    record.thread = r["thread"].id
    record.threadName = r["thread"].name
    record.process = r["process"].id
    record.processName = r["process"].name
    record.__dict__.update(safe_extra(r["extra"]))
    return record


def _drain_loguru() -> None:
    loguru = sys.modules.get("loguru")
    if loguru is not None:
        try:
            loguru.logger.complete()
        except Exception:
            pass
