"""The contenders: how each one builds its logger, flushes it, and closes it.

Imported by ``worker.py`` inside each contender's own virtualenv, so it uses
the standard library only at import time; a contender's package is imported
when that contender is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Source id and API key (bearer token) every shipping contender uses; the
#: collector stores what it receives in ``<out>/bench.ndjson``.
SOURCE = "bench"

#: Fields the python-json-logger contender is asked for, close to what a
#: timber frame holds (time, level, logger, message; extras come by default).
JSON_LOGGER_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@dataclass
class Contender:
    """A logger wired to one contender, and how to settle it."""

    name: str
    logger: logging.Logger
    handler: logging.Handler
    #: Waits until everything logged so far has left the process (or at
    #: least the handler's queue, for handlers that cannot tell).
    flush: Callable[[], None]
    #: Flushes and stops the handler's threads.
    close: Callable[[], None]
    #: Entered around the logging calls (``timber.context`` for timber-ctx).
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    #: Counters the handler keeps itself (drops, bytes), if any.
    stats: Callable[[], dict[str, Any]] = field(default=lambda: {})


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"bench.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _nothing() -> None:
    pass


def floor(name: str = "floor") -> Contender:
    """A logger whose only handler is ``logging.NullHandler``."""
    handler = logging.NullHandler()
    return Contender(name, _logger(name, handler), handler, _nothing, _nothing)


def _stream(name: str, formatter: logging.Formatter | None) -> Contender:
    devnull = open(os.devnull, "w")
    handler = logging.StreamHandler(devnull)
    if formatter is not None:
        handler.setFormatter(formatter)

    def close() -> None:
        handler.close()
        devnull.close()

    return Contender(name, _logger(name, handler), handler, handler.flush, close)


def stream(name: str = "stream") -> Contender:
    """``logging.StreamHandler`` to /dev/null with the default formatter."""
    return _stream(name, None)


def stream_json(name: str = "stream-json") -> Contender:
    """``logging.StreamHandler`` to /dev/null with python-json-logger."""
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:  # releases before 3.1
        from pythonjsonlogger.jsonlogger import JsonFormatter  # type: ignore[no-redef]
    return _stream(name, JsonFormatter(JSON_LOGGER_FORMAT))


def stream_timber(name: str = "stream-timber") -> Contender:
    """``logging.StreamHandler`` to /dev/null with ``timber.TimberFormatter``."""
    import timber

    return _stream(name, timber.TimberFormatter())


def timber_handler(name: str, url: str, **options: Any) -> Contender:
    """This project's ``timber.TimberHandler``, sending to the collector."""
    import timber

    handler = timber.TimberHandler(
        **(
            {} if options.get("destination") == "otlp" else {"api_key": SOURCE, "source_id": SOURCE}
        ),
        host=url,
        **options,
    )

    def context() -> contextlib.AbstractContextManager[Any]:
        if name.endswith("-ctx"):
            return timber.context(user={"id": 123, "plan": "pro"}, request={"id": "r-42"})
        return contextlib.nullcontext()

    return Contender(
        name,
        _logger(name, handler),
        handler,
        handler.flush,
        handler.close,
        context,
        handler.stats,
    )


def timber_otlp(name: str, url: str, **options: Any) -> Contender:
    """This project's handler with ``destination='otlp'``, sending to the
    OTLP sink; ``url`` is the sink's base URL."""
    return timber_handler(name, url, destination="otlp", **options)


def timber210(name: str, url: str) -> Contender:
    """``timber==2.1.0`` from PyPI (a ``multiprocessing`` queue and a flush
    thread; it posts to ``{host}/sources/{id}/frames`` like this project)."""
    import timber

    handler = timber.TimberHandler(api_key=SOURCE, source_id=SOURCE, host=url)

    def flush() -> None:
        # No flush(): wait until its flush thread took everything queued,
        # and a little for the upload of the last full batch.
        handler.pipe.join()
        time.sleep(0.3)

    def close() -> None:
        # A partial batch goes out one flush interval after the last one.
        handler.pipe.join()
        time.sleep(handler.flush_interval + 0.5)

    return Contender(
        name,
        _logger(name, handler),
        handler,
        flush,
        close,
        stats=lambda: {"dropped": handler.dropcount},
    )


def logtail(name: str, url: str) -> Contender:
    """``logtail-python`` (Better Stack), which posts to its host's root."""
    from logtail import LogtailHandler

    handler = LogtailHandler(source_token=SOURCE, host=url)
    return Contender(
        name,
        _logger(name, handler),
        handler,
        handler.flush,
        handler.flush,
        stats=lambda: {"dropped": handler.dropcount},
    )


def otel(name: str, url: str) -> Contender:
    """OpenTelemetry SDK: ``LoggingHandler``, ``BatchLogRecordProcessor``,
    the OTLP/HTTP exporter; ``url`` is the OTLP sink."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs"))
    )
    handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)

    def flush() -> None:
        provider.force_flush()

    def close() -> None:
        provider.force_flush()
        provider.shutdown()

    return Contender(name, _logger(name, handler), handler, flush, close)


#: Contender name -> (builder, which endpoint it needs: None, "collector", "otlp").
BUILDERS: dict[str, tuple[Callable[..., Contender], str | None]] = {
    "floor": (floor, None),
    "stream": (stream, None),
    "stream-json": (stream_json, None),
    "stream-timber": (stream_timber, None),
    "timber": (timber_handler, "collector"),
    "timber-ctx": (timber_handler, "collector"),
    "timber-2.1.0": (timber210, "collector"),
    "logtail": (logtail, "collector"),
    "otel": (otel, "otlp"),
    "timber-otlp": (timber_otlp, "otlp"),
}


def build(name: str, url: str | None = None, **options: Any) -> Contender:
    """The contender called ``name``, sending to ``url`` if it ships."""
    builder, endpoint = BUILDERS[name]
    if endpoint is None:
        return builder(name)
    return builder(name, url, **options)
