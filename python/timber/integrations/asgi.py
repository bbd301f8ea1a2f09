"""``TimberMiddleware`` for ASGI apps (FastAPI, Starlette, Litestar, Django
under ASGI): binds each HTTP request's ``request`` context for its whole
lifetime and, optionally, logs one access record.

It is a pure ASGI middleware, not Starlette's ``BaseHTTPMiddleware`` (which
runs the app in another task, so context set around it does not reach the
endpoint). ``lifespan`` and ``websocket`` scopes pass through untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
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

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TimberMiddleware:
    """Wraps an ASGI app: inside each HTTP request, records carry
    ``context.request = {method, path, id, client, traceparent?}``.

    The id is the request's ``request_id_header`` (when it is up to 200
    visible ASCII characters) or a new uuid4 hex, and is echoed in the
    response under the same header. With ``access_log=True``, one record per
    request is logged to ``logger`` (default ``timber.access``) with
    ``status`` and ``duration_ms``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: bool = False,
        logger: logging.Logger | None = None,
        request_id_header: str = "x-request-id",
        context: TimberContext | None = None,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)
        self.request_id_header = request_id_header.lower()
        self._header_key = self.request_id_header.encode("latin-1")
        self.context = context if context is not None else timber.context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        try:
            fields = self._fields(scope)
            block = self.context(request=fields)
        except Exception:
            # Timber's problem, never the request's.
            await self.app(scope, receive, send)
            return
        rid = fields["id"]
        status: int | None = None
        header = (self._header_key, rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                try:
                    status = int(message.get("status", 0))
                    headers = list(message.get("headers") or ())
                    if not any(bytes(k).lower() == self._header_key for k, _ in headers):
                        message = {**message, "headers": [*headers, header]}
                except Exception:
                    pass
            await send(message)

        start = time.perf_counter()
        with block:
            try:
                await self.app(scope, receive, send_with_id)
            except BaseException:
                if status is None:
                    # No response was started: the server answers 500.
                    status = 500
                raise
            finally:
                if self.access_log:
                    ms = (time.perf_counter() - start) * 1000
                    log_access(self.logger, fields["method"], fields["path"], status or 0, ms)

    def _fields(self, scope: Scope) -> dict[str, Any]:
        given = trace = None
        for key, value in scope.get("headers") or ():
            name = bytes(key).lower()
            if name == self._header_key:
                given = bytes(value).decode("latin-1")
            elif name == b"traceparent":
                trace = bytes(value).decode("latin-1")
        client = scope.get("client")
        return request_fields(
            str(scope.get("method", "")),
            str(scope.get("path", "")),
            request_id(given),
            str(client[0]) if client else None,
            traceparent(trace),
        )
