"""``TimberMiddleware`` for WSGI apps (Flask and any other): binds each
request's ``request`` context while the app runs and while the server
iterates and closes the response, and optionally logs one access record."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import timber
from timber.context import TimberContext
from timber.integrations._request import (
    ACCESS_LOGGER,
    log_access,
    request_fields,
    request_id,
    traceparent,
)

__all__ = ["TimberMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class TimberMiddleware:
    """Wraps a WSGI app: records logged while it handles a request carry
    ``context.request = {method, path, id, client, traceparent?}``, the same
    as :class:`timber.integrations.asgi.TimberMiddleware`.

    Flask: ``app.wsgi_app = TimberMiddleware(app.wsgi_app)``.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        access_log: bool = False,
        logger: logging.Logger | None = None,
        request_id_header: str = "x-request-id",
        context: TimberContext | None = None,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)
        self.request_id_header = request_id_header
        self._environ_key = "HTTP_" + request_id_header.upper().replace("-", "_")
        self.context = context if context is not None else timber.context

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            fields = self._fields(environ)
            block = self.context(request=fields)
        except Exception:
            # Timber's problem, never the request's.
            return self.app(environ, start_response)
        state = _Request(self, fields, start_response)
        with block:
            try:
                body = self.app(environ, state.start_response)
            except BaseException:
                state.status = state.status or 500
                state.done()
                raise
        return _Body(body, block, state)

    def _fields(self, environ: Environ) -> dict[str, Any]:
        return request_fields(
            str(environ.get("REQUEST_METHOD", "")),
            str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")),
            request_id(environ.get(self._environ_key)),
            environ.get("REMOTE_ADDR") or None,
            traceparent(environ.get("HTTP_TRACEPARENT")),
        )


class _Request:
    """One request's response state: its status, and the access record."""

    def __init__(
        self, middleware: TimberMiddleware, fields: dict[str, Any], start_response: StartResponse
    ) -> None:
        self.middleware = middleware
        self.fields = fields
        self.outer = start_response
        self.status: int | None = None
        self.started = time.perf_counter()
        self.logged = False

    def start_response(self, status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        try:
            self.status = int(status.split(None, 1)[0])
            wanted = self.middleware.request_id_header.lower()
            if not any(name.lower() == wanted for name, _ in headers):
                headers = [*headers, (self.middleware.request_id_header, self.fields["id"])]
        except Exception:
            pass
        return self.outer(status, headers, *exc_info)

    def done(self) -> None:
        if self.logged or not self.middleware.access_log:
            return
        self.logged = True
        ms = (time.perf_counter() - self.started) * 1000
        fields = self.fields
        log_access(self.middleware.logger, fields["method"], fields["path"], self.status or 0, ms)


class _Body:
    """The app's response iterable, each step run inside the request's
    context: a streaming response logs with its request's context too, and
    nothing stays bound between requests if the server never closes it."""

    def __init__(self, body: Iterable[bytes], block: Any, state: _Request) -> None:
        self.body = body
        self.block = block
        self.state = state
        self.iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with self.block:
            if self.iterator is None:
                self.iterator = iter(self.body)
            try:
                return next(self.iterator)
            except StopIteration:
                raise
            except BaseException:
                self.state.status = 500 if self.state.status is None else self.state.status
                raise

    def close(self) -> None:
        with self.block:
            try:
                close = getattr(self.body, "close", None)
                if close is not None:
                    close()
            finally:
                self.state.done()
