"""Django: ``TimberMiddleware`` binds each request's ``request`` context (and
``user`` once authenticated), sync or async; ``RequestFilter`` turns the
``HttpRequest`` Django puts on its own records into a small dict.

Nothing here imports Django until a middleware is instantiated.
"""

from __future__ import annotations

import copy
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import timber
from timber.context import TimberContext
from timber.integrations._request import request_fields, request_id, traceparent

__all__ = ["RequestFilter", "TimberMiddleware"]


class TimberMiddleware:
    """Add it to ``MIDDLEWARE`` after
    ``django.contrib.auth.middleware.AuthenticationMiddleware``: records
    logged while Django handles a request carry ``context.request = {method,
    path, id, client, traceparent?}`` and, for an authenticated user,
    ``context.user = {id}``. The request id is echoed in the response.

    Subclass to change ``request_id_header`` or ``context``.
    """

    # What @sync_and_async_middleware sets: Django runs it in either mode
    # without an adapter (and a thread) in between.
    sync_capable = True
    async_capable = True

    request_id_header = "X-Request-ID"
    context: TimberContext | None = None

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        coroutines = importlib.import_module("asgiref.sync")
        self.get_response = get_response
        self.is_async = bool(coroutines.iscoroutinefunction(get_response))
        if self.is_async:
            coroutines.markcoroutinefunction(self)
        self._context = self.context if self.context is not None else timber.context

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        try:
            rid, block = self._bind(request, self._user(request))
        except Exception:
            # Timber's problem, never the request's.
            return self.get_response(request)
        with block:
            response = self.get_response(request)
        self._echo(response, rid)
        return response

    async def _acall(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        try:
            rid, block = self._bind(request, await self._auser(request))
        except Exception:
            return await get_response(request)
        with block:
            response = await get_response(request)
        self._echo(response, rid)
        return response

    def _bind(self, request: Any, user_id: Any) -> tuple[str, Any]:
        meta = request.META
        rid = request_id(request.headers.get(self.request_id_header))
        fields = request_fields(
            str(request.method),
            str(request.path),
            rid,
            meta.get("REMOTE_ADDR") or None,
            traceparent(request.headers.get("traceparent")),
        )
        if user_id is None:
            return rid, self._context(request=fields)
        return rid, self._context(request=fields, user={"id": user_id})

    @staticmethod
    def _user(request: Any) -> Any:
        try:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                return user.pk
        except Exception:
            pass
        return None

    @staticmethod
    async def _auser(request: Any) -> Any:
        try:
            auser = getattr(request, "auser", None)
            if auser is None:
                return None
            user = await auser()
            if user is not None and user.is_authenticated:
                return user.pk
        except Exception:
            pass
        return None

    def _echo(self, response: Any, rid: str) -> None:
        try:
            if self.request_id_header not in response:
                response[self.request_id_header] = rid
        except Exception:
            pass


class RequestFilter(logging.Filter):
    """For a TimberHandler (``handler.addFilter(RequestFilter())``): the
    ``request`` Django's own records carry (``django.request``,
    ``django.security.*``) is sent as ``{method, path, status_code?}``
    instead of the ``HttpRequest``'s text.

    From Python 3.12 the filter hands the handler a changed copy, so other
    handlers (``mail_admins``) still see the ``HttpRequest``; before 3.12 a
    filter can only change the record itself, for the handlers after this
    one too.
    """

    if sys.version_info >= (3, 12):

        def filter(self, record: logging.LogRecord) -> bool | logging.LogRecord:
            summary = _summary(record)
            if summary is None:
                return True
            record = copy.copy(record)
            record.request = summary
            return record

    else:

        def filter(self, record: logging.LogRecord) -> bool:
            summary = _summary(record)
            if summary is not None:
                record.request = summary
            return True


def _summary(record: logging.LogRecord) -> dict[str, Any] | None:
    """``{method, path, status_code?}`` for a record carrying an HttpRequest."""
    request = getattr(record, "request", None)
    if request is None or isinstance(request, dict):
        return None
    try:
        summary: dict[str, Any] = {"method": request.method, "path": request.path}
    except AttributeError:
        # Not an HttpRequest (django.server passes a socket): left alone.
        return None
    status = getattr(record, "status_code", None)
    if status is not None:
        summary["status_code"] = status
    return summary
