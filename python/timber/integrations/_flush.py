"""``flush_after``: deliver what an invocation logged before a short-lived
runtime (AWS Lambda, Cloud Run jobs, RQ work horses, cron) freezes or ends
the process, within a bound, also when the invocation raises."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, overload

from timber.handler import TimberHandler

__all__ = ["flush_after"]

F = TypeVar("F", bound=Callable[..., Any])


def live_handlers() -> list[TimberHandler]:
    """Every TimberHandler not yet garbage-collected, attached to a logger or
    not (a loguru sink's, say)."""
    # logging keeps a weak reference to every handler ever created, for
    # logging.shutdown(); timber has no public registry of its own.
    refs = list(getattr(logging, "_handlerList", ()))
    found = []
    for ref in refs:
        handler = ref()
        if isinstance(handler, TimberHandler):
            found.append(handler)
    return found


def flush_handlers(handler: TimberHandler | None, timeout: float | None) -> None:
    """Flushes ``handler`` (every live TimberHandler if None) at once, each in
    its own thread, and returns after ``timeout`` seconds at most (the
    longest ``flush_timeout`` among them when None). Raises the first error
    a flush raised in time (only ``raise_exceptions=True`` handlers raise)."""
    handlers = live_handlers() if handler is None else [handler]
    if not handlers:
        return
    if timeout is None:
        timeout = max(float(h.flush_timeout) for h in handlers)
    errors: list[BaseException] = []

    def run(h: TimberHandler) -> None:
        try:
            h.flush()
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(h,), name="timber-flush", daemon=True) for h in handlers
    ]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]


class _FlushAfter:
    """Context manager and decorator (sync and async) returned by
    :func:`flush_after`."""

    def __init__(self, handler: TimberHandler | None, timeout: float | None) -> None:
        if handler is not None and not isinstance(handler, TimberHandler):
            raise ValueError(f"handler must be a timber.TimberHandler, got {handler!r}")
        if timeout is not None and (isinstance(timeout, bool) or timeout < 0):
            raise ValueError(f"timeout must be a number >= 0, got {timeout!r}")
        self.handler = handler
        self.timeout = timeout

    def _after(self, exc: BaseException | None) -> None:
        try:
            flush_handlers(self.handler, self.timeout)
        except Exception:
            # The invocation's own exception wins over a delivery problem.
            if exc is None:
                raise

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._after(exc)

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Off the event loop: other tasks keep running while it waits.
        await asyncio.to_thread(self._after, exc)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with self:
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]


@overload
def flush_after(handler: F, *, timeout: float | None = None) -> F: ...


@overload
def flush_after(
    handler: TimberHandler | None = None, *, timeout: float | None = None
) -> _FlushAfter: ...


def flush_after(handler: Any = None, *, timeout: float | None = None) -> Any:
    """Flushes ``handler`` (every live TimberHandler if None) when the
    decorated function or the ``with`` block ends, returning or raising.

    ``timeout`` bounds the wait in seconds (default: the handlers' own
    ``flush_timeout``). Usable as ``@flush_after``, ``@flush_after(...)``,
    ``with flush_after(...):`` and ``async with flush_after(...):``; a
    decorated ``async def`` stays a coroutine function.
    """
    if callable(handler) and not isinstance(handler, logging.Handler):
        return _FlushAfter(None, timeout)(handler)
    return _FlushAfter(handler, timeout)
