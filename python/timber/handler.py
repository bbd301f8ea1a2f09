"""``TimberHandler``: a :class:`logging.Handler` that ships records to a
Timber-compatible endpoint.

Each record is encoded once, in Rust, on the logging thread; sender threads
of the engine batch and send them without the GIL. Nothing here waits on the
network: ``emit`` only encodes and buffers.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import weakref
from typing import Any

from timber import _engine
from timber.context import TimberContext, resolve

__all__ = ["DEFAULT_HOST", "DeliveryError", "TimberHandler"]

DEFAULT_HOST = "https://logs.timber.io"
DEFAULT_BUFFER_CAPACITY = 1000
DEFAULT_FLUSH_INTERVAL = 2.0
DEFAULT_MAX_BUFFER_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BUFFER_RECORDS = 500_000

_live: weakref.WeakSet[TimberHandler] = weakref.WeakSet()
_SHUTDOWN_CODE = logging.shutdown.__code__


class DeliveryError(Exception):
    """Records were not delivered; raised by ``flush()`` only with
    ``raise_exceptions=True``."""


def _credential(value: str | None, argument: str, variable: str) -> str:
    if value is None or value == "":
        value = os.environ.get(variable, "")
    if not value:
        raise ValueError(
            f"TimberHandler needs {argument}=... or the environment variable {variable}"
        )
    if not isinstance(value, str):
        raise ValueError(f"{argument} must be a string, got {type(value).__name__}")
    return value


def _number(name: str, value: Any, *, integer: bool = False, minimum: float = 0) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {value!r}")
    return value


class TimberHandler(logging.Handler):
    """Sends log records to Timber (or any endpoint speaking its frames API).

    ``api_key``, ``source_id`` and ``host`` default to the environment
    variables ``TIMBER_API_KEY``, ``TIMBER_SOURCE_ID`` and ``TIMBER_HOST``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        source_id: str | None = None,
        host: str | None = None,
        buffer_capacity: int = DEFAULT_BUFFER_CAPACITY,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        raise_exceptions: bool = False,
        drop_extra_events: bool = True,
        context: TimberContext | None = None,
        level: int | str = logging.NOTSET,
        *,
        include_extra_attributes: bool = True,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        max_buffer_records: int = DEFAULT_MAX_BUFFER_RECORDS,
        max_in_flight: int = 2,
        timeout: float = 10.0,
        retry_timeout: float = 300.0,
        flush_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        compression: str | None = "gzip",
        ca_bundle: str | os.PathLike[str] | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        # Everything is checked before logging.Handler.__init__ registers the
        # handler for logging.shutdown: a constructor that raises leaves
        # nothing half-built behind.
        self.api_key = _credential(api_key, "api_key", "TIMBER_API_KEY")
        self.source_id = _credential(source_id, "source_id", "TIMBER_SOURCE_ID")
        self.host = host or os.environ.get("TIMBER_HOST") or DEFAULT_HOST
        self.context = resolve(context)
        self.buffer_capacity = _number("buffer_capacity", buffer_capacity, integer=True, minimum=1)
        self.flush_interval = _number("flush_interval", flush_interval)
        self.raise_exceptions = bool(raise_exceptions)
        self.drop_extra_events = bool(drop_extra_events)
        self.include_extra_attributes = bool(include_extra_attributes)
        self.max_buffer_bytes = _number("max_buffer_bytes", max_buffer_bytes, integer=True)
        self.max_buffer_records = _number(
            "max_buffer_records", max_buffer_records, integer=True, minimum=1
        )
        self.max_in_flight = _number("max_in_flight", max_in_flight, integer=True, minimum=1)
        self.timeout = _number("timeout", timeout)
        self.retry_timeout = _number("retry_timeout", retry_timeout)
        self.flush_timeout = _number("flush_timeout", flush_timeout)
        self.shutdown_timeout = _number("shutdown_timeout", shutdown_timeout)
        self.backoff_base = _number("backoff_base", backoff_base)
        self.backoff_max = _number("backoff_max", backoff_max)
        self.compression = compression
        self.spool_dir = spool_dir
        self.spool_max_bytes = _number("spool_max_bytes", spool_max_bytes, integer=True)
        # As requests does: an explicit bundle, else REQUESTS_CA_BUNDLE, else
        # SSL_CERT_FILE, else the system's trust store.
        self.ca_bundle = (
            ca_bundle
            or os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("SSL_CERT_FILE")
            or None
        )
        self._engine = self._new_engine()
        self._emit = self._engine.emit
        self._dropped_reported = 0
        super().__init__(level=level)
        _live.add(self)
        _hook_multiprocessing()

    def _new_engine(self) -> _engine.Engine:
        from urllib.parse import quote

        return _engine.Engine(
            url=f"{self.host.rstrip('/')}/sources/{quote(self.source_id, safe='')}/frames",
            api_key=self.api_key,
            context=self.context,
            buffer_capacity=self.buffer_capacity,
            flush_interval=float(self.flush_interval),
            max_buffer_bytes=self.max_buffer_bytes,
            max_buffer_records=self.max_buffer_records,
            drop_extra_events=self.drop_extra_events,
            retry_timeout=float(self.retry_timeout),
            timeout=float(self.timeout),
            max_in_flight=self.max_in_flight,
            include_extra_attributes=self.include_extra_attributes,
            raise_exceptions=self.raise_exceptions,
            compression=self.compression or "none",
            ca_bundle=os.fspath(self.ca_bundle) if self.ca_bundle else None,
            backoff_base=float(self.backoff_base),
            backoff_max=float(self.backoff_max),
            spool_dir=os.fspath(self.spool_dir) if self.spool_dir is not None else None,
            spool_max_bytes=self.spool_max_bytes,
        )

    def handle(self, record: logging.LogRecord) -> Any:
        # No handler lock: the engine is thread-safe, and emit never blocks.
        if not self.filters:
            self._emit(record)
            return record
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):
            record = rv
        if rv:
            self._emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        self._emit(record)

    def flush(self) -> None:
        """Sends what is buffered and waits until every record logged before
        the call is delivered or given up, for at most ``flush_timeout``.

        With ``raise_exceptions=True``, raises :class:`DeliveryError` if the
        wait timed out or records were dropped since the last check."""
        if sys._getframe(1).f_code is _SHUTDOWN_CODE:
            # logging.shutdown() calls close() right after, which delivers
            # within shutdown_timeout: waiting here too would wait twice.
            return
        done = self._engine.flush(float(self.flush_timeout))
        if self.raise_exceptions:
            self._raise_delivery_problems(done)

    def _raise_delivery_problems(self, done: bool) -> None:
        stats = self._engine.stats()
        dropped = stats["dropped"] - self._dropped_reported
        self._dropped_reported = stats["dropped"]
        if dropped:
            reasons = {k: v for k, v in stats["dropped_by_reason"].items() if v}
            raise DeliveryError(f"{dropped} records were not delivered ({reasons})")
        if not done:
            raise DeliveryError(
                f"records still undelivered after flush_timeout={self.flush_timeout}s "
                f"({stats['buffered_records']} buffered)"
            )

    def close(self) -> None:
        """Delivers what is buffered (for at most ``shutdown_timeout``) and
        stops the sender threads. Records logged afterwards are dropped."""
        self._close(float(self.shutdown_timeout))

    def _close(self, timeout: float) -> None:
        try:
            self._engine.close(timeout)
        finally:
            _live.discard(self)
            super().close()

    @property
    def dropcount(self) -> int:
        """Records dropped because the buffer was full."""
        return self._engine.dropcount

    def stats(self) -> dict[str, Any]:
        """Counters of what happened to records so far."""
        return self._engine.stats()

    def _after_fork_in_child(self) -> None:
        # The parent's buffer, threads and connections stay the parent's: it
        # sends what it buffered. This process starts afresh.
        old = self._engine
        try:
            engine = self._new_engine()
        except Exception:
            # The spool could not be opened here: log without it rather than
            # lose this process's records.
            self.spool_dir = None
            engine = self._new_engine()
        old.abandon()
        self._engine = engine
        self._emit = engine.emit
        self._dropped_reported = 0

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self.host} source={self.source_id} ({level})>"


def _close_all() -> None:
    """Closes every handler at exit, within one shared deadline: the longest
    shutdown_timeout among them, not their sum."""
    import time

    handlers = list(_live)
    if not handlers:
        return
    deadline = time.monotonic() + max(float(h.shutdown_timeout) for h in handlers)
    for handler in handlers:
        left = max(0.0, min(float(handler.shutdown_timeout), deadline - time.monotonic()))
        handler._close(left)


def _after_fork_in_child() -> None:
    for handler in list(_live):
        handler._after_fork_in_child()


class _Anchor:
    """Keeps the multiprocessing after-fork hook registered (it holds only a
    weak reference)."""


_anchor = _Anchor()
_multiprocessing_hooked = False


def _close_at_multiprocessing_exit(_: object = None) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _close_all, exitpriority=10)


def _hook_multiprocessing() -> None:
    """multiprocessing children end with ``os._exit()``, which skips atexit,
    but they run multiprocessing's finalizers first: close there too. A
    forked child's finalizers are reset after the fork, hence the hook."""
    global _multiprocessing_hooked
    if _multiprocessing_hooked:
        return
    _multiprocessing_hooked = True
    import multiprocessing.util

    multiprocessing.util.register_after_fork(_anchor, _close_at_multiprocessing_exit)
    _close_at_multiprocessing_exit()


# Registered after logging's own exit hook, so it runs before it: records
# already accepted are delivered without an explicit flush().
atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
