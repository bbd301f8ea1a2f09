"""What the ASGI, WSGI and Django middlewares share: the request id rule and
the access record."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

#: A request id taken from a header: visible ASCII, at most 200 characters.
#: Anything else is replaced, so a client cannot write arbitrary text (or
#: megabytes) into every record of its request.
_VALID_ID = re.compile(r"[!-~]{1,200}")
#: W3C trace context: version-traceid-parentid-flags.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

ACCESS_LOGGER = "timber.access"


def request_id(given: str | None) -> str:
    """The client's id when it is acceptable, else a new uuid4 hex."""
    if given is not None and _VALID_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def traceparent(given: str | None) -> str | None:
    """A well-formed ``traceparent`` header value, else None."""
    if given is not None:
        given = given.strip().lower()
        if _TRACEPARENT.fullmatch(given):
            return given
    return None


def request_fields(
    method: str, path: str, rid: str, client: str | None, trace: str | None
) -> dict[str, Any]:
    """The ``request`` context of one request."""
    fields: dict[str, Any] = {"method": method, "path": path, "id": rid, "client": client}
    if trace is not None:
        fields["traceparent"] = trace
    return fields


def log_access(logger: logging.Logger, method: str, path: str, status: int, ms: float) -> None:
    """The access record: one per request, logged inside its context."""
    level = logging.ERROR if status >= 500 else logging.INFO
    try:
        logger.log(
            level,
            "%s %s %s",
            method,
            path,
            status,
            extra={"status": status, "duration_ms": round(ms, 3)},
        )
    except Exception:
        # A broken handler or filter must not fail the request it describes.
        pass
