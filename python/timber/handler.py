"""``TimberHandler``: a :class:`logging.Handler` that ships records to a
Timber-compatible endpoint.

Each record is encoded once, in Rust, on the logging thread; sender threads
of the engine batch and send them without the GIL. Nothing here waits on the
network: ``emit`` only encodes and buffers.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
import weakref
from typing import Any

from timber import _engine
from timber.context import TimberContext, resolve

__all__ = ["DeliveryError", "TimberHandler", "TimberQueueHandler"]

_live: weakref.WeakSet[TimberHandler] = weakref.WeakSet()
_SHUTDOWN_CODE = logging.shutdown.__code__

#: The options the engine declares (name -> default), read once.
_OPTIONS = {name: default for name, default, _env, _doc in _engine.declared()}


class DeliveryError(Exception):
    """Records were not delivered; raised by ``flush()`` only with
    ``raise_exceptions=True``."""


class UnknownOptionError(TypeError, ValueError):
    """A keyword argument no option has: a ``TypeError``, as Python raises
    for an unexpected keyword, and a ``ValueError``, as timber raised
    before, so that callers catching either keep working."""


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
        buffer_capacity: int = 1000,
        flush_interval: float = 2,
        raise_exceptions: bool = False,
        drop_extra_events: bool = True,
        context: TimberContext | None = None,
        level: int | str = logging.NOTSET,
        **options: Any,
    ) -> None:
        """Every option is read and checked by the engine (``_engine.declared()``
        lists them with their defaults and environment variables); a wrong one
        raises ``ValueError`` naming it. The keyword-only options are those of
        the configuration table of ``docs/configuration.md``."""
        # Everything is checked before logging.Handler.__init__ registers the
        # handler for logging.shutdown: a constructor that raises leaves
        # nothing half-built behind.
        for name in options:
            message = _engine.unknown_option(name)
            if message is not None:
                raise UnknownOptionError(message)
        self.context = resolve(context)
        self._options: dict[str, Any] = {
            "api_key": api_key,
            "source_id": source_id,
            "host": host,
            "buffer_capacity": buffer_capacity,
            "flush_interval": flush_interval,
            "raise_exceptions": raise_exceptions,
            "drop_extra_events": drop_extra_events,
            **options,
        }
        self._engine = self._new_engine()
        self._emit = self._engine.emit
        self._dropped_reported = 0
        super().__init__(level=level)
        _live.add(self)
        _hook_multiprocessing()

    def _new_engine(self) -> _engine.Engine:
        var, global_context = self.context._sources()
        return _engine.Engine(self._options, var, global_context)

    def __getattr__(self, name: str) -> Any:
        # The options, as the engine runs with them (host, source_id,
        # flush_timeout...), without a second copy here.
        if name in _OPTIONS and "_engine" in self.__dict__:
            return self._engine.settings()[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def raise_exceptions(self) -> bool:
        """Whether internal errors reach the caller; may be changed at any
        time, and ``emit`` and ``flush`` both follow it."""
        return self._engine.raise_exceptions

    @raise_exceptions.setter
    def raise_exceptions(self, value: bool) -> None:
        self._engine.raise_exceptions = bool(value)

    def handle(self, record: logging.LogRecord) -> Any:
        # No handler lock: the engine is thread-safe, and emit never blocks.
        if not self.filters:
            if self.formatter is None:
                self._emit(record)
            else:
                self._emit_formatted(record)
            return record
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        if self.formatter is None:
            self._emit(record)
        else:
            self._emit_formatted(record)

    def _emit_formatted(self, record: logging.LogRecord) -> None:
        # A formatter set on the handler makes the message, as in the
        # original client; the rest of the frame is built as always.
        try:
            message = self.format(record)
        except Exception:
            if self.raise_exceptions:
                raise
            message = None
        self._emit(record, message)

    def flush(self) -> None:
        """Sends what is buffered and waits until every record logged before
        the call is delivered or given up, for at most ``flush_timeout``.

        With ``raise_exceptions=True``, raises :class:`DeliveryError` if the
        wait timed out or records were dropped since the last check."""
        if sys._getframe(1).f_code is _SHUTDOWN_CODE:
            # logging.shutdown() calls close() right after, which delivers
            # within shutdown_timeout: waiting here too would wait twice.
            return
        done = self._engine.flush()
        if self.raise_exceptions:
            self._raise_delivery_problems(done)

    def _raise_delivery_problems(self, done: bool) -> None:
        stats = self._engine.stats()
        if stats["dropped"] < self._dropped_reported:
            # A forked child: the engine counts this process's records only.
            self._dropped_reported = 0
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
        caller = sys._getframe().f_back
        if caller is not None and caller.f_code is _SHUTDOWN_CODE:
            # logging.shutdown(), at exit or by hand: every handler at once,
            # within one deadline.
            _close_all()
        self._close(None)

    def _close(self, timeout: float | None) -> None:
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

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self.host} source={self.source_id} ({level})>"


class TimberQueueHandler(logging.handlers.QueueHandler):
    """A :class:`logging.handlers.QueueHandler` that keeps the caller's
    ``timber.context``: the handler behind the ``QueueListener`` runs on the
    listener's thread, where the caller's context is not visible, so the
    context is captured here, on the caller's thread, with the record.

    ``context`` is the ``TimberContext`` to capture (``timber.context`` by
    default); TimberHandler and TimberFormatter use the captured one.
    """

    def __init__(self, queue: Any, context: TimberContext | None = None) -> None:
        super().__init__(queue)
        self.context = resolve(context)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        snapshot = self.context._current()
        record = super().prepare(record)
        if snapshot is not None:
            record._timber_context = snapshot
        return record


def _close_all() -> None:
    """Closes every handler within one shared deadline: the longest
    shutdown_timeout among them, not their sum.

    At exit this runs when ``logging.shutdown()`` closes the first timber
    handler. logging registers that hook when it is first imported (by
    timber at the latest), and atexit runs hooks last-registered first: every
    exit hook registered after ``import logging`` has run by then, and what
    it logged is delivered. In the main process timber closes from no exit
    hook of its own, so it never closes before them."""
    import time

    handlers = list(_live)
    if not handlers:
        return
    timeouts = [float(h.shutdown_timeout) for h in handlers]
    deadline = time.monotonic() + max(timeouts)
    for handler, timeout in zip(handlers, timeouts, strict=True):
        handler._close(max(0.0, min(timeout, deadline - time.monotonic())))


class _Anchor:
    """Keeps the multiprocessing after-fork hook registered (it holds only a
    weak reference)."""


_anchor = _Anchor()
_multiprocessing_hooked = False


def _in_multiprocessing_child(_: object = None) -> None:
    """Set-up of a multiprocessing child (any start method), run by its
    bootstrap before its target, or when its first handler is made.

    Such a child ends with ``os._exit()`` (fork, forkserver), which skips
    atexit, or is killed with SIGTERM (``Pool.terminate()``, which
    ``with Pool()`` calls at the end of the block). It runs multiprocessing's
    exit finalizers when its target returns: timber closes there. And it
    closes on SIGTERM, unless the program handles SIGTERM itself."""
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _close_all, exitpriority=10)
    _close_on_sigterm()


def _close_on_sigterm() -> None:
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        # The program (or its framework) decides what SIGTERM does.
        return
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    """Delivers within shutdown_timeout, then dies of SIGTERM as if timber
    had never caught it (same exit status for the parent to see)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _close_all()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def _hook_multiprocessing() -> None:
    """Makes every multiprocessing child set itself up (above). A child's
    bootstrap runs the after-fork hooks (fork, forkserver); a handler made in
    a child that is running its target, or in a spawned child while it
    imports the main module (``_inheriting``, as multiprocessing itself
    checks), sets it up at once."""
    global _multiprocessing_hooked
    if _multiprocessing_hooked:
        return
    _multiprocessing_hooked = True
    import multiprocessing
    import multiprocessing.process
    import multiprocessing.util

    multiprocessing.util.register_after_fork(_anchor, _in_multiprocessing_child)
    current = multiprocessing.process.current_process()
    if multiprocessing.parent_process() is not None or getattr(current, "_inheriting", False):
        _in_multiprocessing_child()


def _exit_begins() -> None:
    """Python is exiting: next it joins the threads that are not daemons,
    and only then runs atexit. One waiting for room in a handler
    (``drop_extra_events=False``) while the endpoint is down would hold the
    exit for as long as retries go on: it waits at most shutdown_timeout
    more, then drops the record (``buffer_full``)."""
    for handler in list(_live):
        handler._engine.end_waits()


# Runs when the interpreter starts exiting, before it joins threads (the
# hook concurrent.futures uses); atexit would be too late.
_register_threading_atexit = getattr(threading, "_register_atexit", None)
if _register_threading_atexit is not None:
    try:
        _register_threading_atexit(_exit_begins)
    except RuntimeError:
        # Imported while the interpreter exits: no thread is joined any more.
        pass
