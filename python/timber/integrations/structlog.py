"""structlog: two processors for its two stdlib routes into a TimberHandler.

- ``render_to_log_kwargs``, the last processor of ``structlog.configure``:
  as ``structlog.stdlib.render_to_log_kwargs`` (the event becomes the
  message, the other keys top-level fields through ``extra``), but a key
  that ``logging`` reserves (``name``, ``module``, ``process``, ...) is
  renamed ``extra_<key>`` instead of making the logging call raise, and the
  record's function, file and line are the app's, not structlog's, also for
  a logger that structlog's ``LoggerFactory`` did not create.
- ``render_event``, the last processor of a
  ``structlog.stdlib.ProcessorFormatter`` set on the handler: the formatted
  message is the event alone.

Neither imports structlog.
"""

from __future__ import annotations

import logging
import sys
from types import FrameType
from typing import Any

from timber.integrations._extra import safe_extra

__all__ = ["render_event", "render_to_log_kwargs"]

#: Keyword arguments of logging calls that structlog passes through.
_LOG_KWARGS = ("exc_info", "stack_info", "stacklevel")


def render_to_log_kwargs(logger: Any, _: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The event dict as keyword arguments of a ``logging`` call: ``msg``
    is the event, ``exc_info``, ``stack_info`` and ``stacklevel`` pass
    through, every other key goes into ``extra``."""
    kwargs: dict[str, Any] = {"msg": event_dict.pop("event", "")}
    for name in _LOG_KWARGS:
        if name in event_dict:
            kwargs[name] = event_dict.pop(name)
    kwargs["extra"] = safe_extra(event_dict)
    # structlog's LoggerFactory makes loggers whose findCaller skips its
    # frames itself; any other logger is told how many to skip.
    find_caller = getattr(type(logger), "findCaller", None)
    frames = _structlog_frames(sys._getframe(1)) if find_caller is _FIND_CALLER else 0
    if frames:
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + frames + _STACKLEVEL_BASE
    return kwargs


_FIND_CALLER = logging.Logger.findCaller
#: What ``findCaller`` adds to ``stacklevel`` (the count changed in 3.11).
_STACKLEVEL_BASE = 0 if sys.version_info >= (3, 11) else 1


def _structlog_frames(frame: FrameType | None) -> int:
    """How many structlog frames stand between the app's call and the
    logging call structlog makes after its processors (0 if unknown)."""
    for _ in range(16):
        if frame is None:
            return 0
        if frame.f_code.co_name == "_process_event" and _in_structlog(frame):
            break
        frame = frame.f_back
    else:
        return 0
    # The caller of _process_event makes the logging call.
    frame = frame.f_back
    count = 0
    while frame is not None and _in_structlog(frame):
        count += 1
        frame = frame.f_back
    return count if frame is not None else 0


def _in_structlog(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return isinstance(name, str) and (name == "structlog" or name.startswith("structlog."))


def render_event(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    """The event alone, as the formatted message."""
    return str(event_dict.get("event", ""))
