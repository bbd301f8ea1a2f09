"""Celery: the timber context travels with each task. ``setup()`` connects
Celery's signals so that the context current where a task is published is
restored around the task in the worker, together with ``task={id, name}``,
and optionally logs each task's outcome and flushes after each task.

Celery is imported only when ``setup()`` is called.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from typing import Any

import timber
from timber.context import TimberContext
from timber.handler import TimberHandler
from timber.integrations._flush import flush_handlers

__all__ = ["HEADER", "OUTCOME_LOGGER", "setup"]

#: The message header the context travels in.
HEADER = "timber_context"
#: Where task outcome records are logged.
OUTCOME_LOGGER = "timber.celery"

_UID = "timber.integrations.celery."
#: Context keys timber fills itself, and the one each task sets anew.
_NOT_CARRIED = ("runtime", "system", "task")
_SIGNALS = ("before_task_publish", "task_prerun", "task_postrun", "task_success", "task_failure")
_connected: list[tuple[Any, Any]] = []
_lock = threading.Lock()


def setup(
    handler: TimberHandler | None = None,
    outcome_records: bool = True,
    *,
    flush: bool = False,
    flush_timeout: float | None = None,
    context: TimberContext | None = None,
) -> None:
    """Connects the signals; call it where tasks are published and in the
    worker (the module defining the Celery app is imported by both).

    - ``before_task_publish``: the merged context (``handler.context`` if a
      handler is given, else ``context``, else ``timber.context``) goes into
      the message's ``timber_context`` header, made JSON-safe.
    - ``task_prerun`` / ``task_postrun``: the task runs inside that context
      plus ``task={'id', 'name'}``.
    - ``outcome_records``: ``task_success`` logs an info and ``task_failure``
      an error record (with the exception) to the ``timber.celery`` logger.
    - ``flush``: after each task, flush ``handler`` (every live
      TimberHandler if None) for at most ``flush_timeout`` seconds (default:
      the handlers' own). Needed where pool processes end with
      ``os._exit()``, as ``--max-tasks-per-child`` children do.

    Calling it again replaces the previous connections.
    """
    signals = importlib.import_module("celery.signals")
    if handler is not None:
        ctx = handler.context
    else:
        ctx = context if context is not None else timber.context
    outcome = logging.getLogger(OUTCOME_LOGGER)
    local = threading.local()

    def stack() -> list[tuple[str, Any]]:
        blocks: list[tuple[str, Any]] | None = getattr(local, "blocks", None)
        if blocks is None:
            blocks = local.blocks = []
        return blocks

    def before_task_publish(headers: Any = None, **_: Any) -> None:
        try:
            if headers is not None and ctx.exists():
                headers[HEADER] = _json_safe(ctx.collapse())
        except Exception:
            # A context that cannot travel never stops the task from being sent.
            pass

    def task_prerun(task_id: Any = None, task: Any = None, **_: Any) -> None:
        try:
            carried = _carried(task)
            block = ctx(**carried, task={"id": str(task_id), "name": str(task.name)})
            block.__enter__()
        except Exception:
            return
        stack().append((str(task_id), block))

    def task_postrun(task_id: Any = None, **_: Any) -> None:
        blocks = stack()
        # Unwound in order: a task run eagerly from a task nests inside it.
        while any(tid == str(task_id) for tid, _ in blocks):
            tid, block = blocks.pop()
            block.__exit__(None, None, None)
            if tid == str(task_id):
                break
        if flush:
            try:
                flush_handlers(handler, flush_timeout)
            except Exception:
                pass

    def task_success(sender: Any = None, **_: Any) -> None:
        outcome.info("Task %s succeeded", getattr(sender, "name", sender))

    def task_failure(
        sender: Any = None, exception: Any = None, traceback: Any = None, **_: Any
    ) -> None:
        exc_info = (type(exception), exception, traceback) if exception is not None else None
        outcome.error(
            "Task %s failed: %r", getattr(sender, "name", sender), exception, exc_info=exc_info
        )

    receivers: dict[str, Any] = {
        "before_task_publish": before_task_publish,
        "task_prerun": task_prerun,
        "task_postrun": task_postrun,
    }
    if outcome_records:
        receivers["task_success"] = task_success
        receivers["task_failure"] = task_failure
    with _lock:
        for signal, uid in _connected:
            signal.disconnect(dispatch_uid=uid)
        _connected.clear()
        for name in _SIGNALS:
            if name in receivers:
                signal = getattr(signals, name)
                signal.connect(receivers[name], weak=False, dispatch_uid=_UID + name)
                _connected.append((signal, _UID + name))


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as plain JSON types: what a message serializer can carry."""
    safe: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return safe


def _carried(task: Any) -> dict[str, dict[str, Any]]:
    """The context a task's message carries, as valid ``context()`` keywords."""
    request = task.request
    carried = getattr(request, HEADER, None)
    if carried is None:
        # Where the message's custom headers stay nested.
        carried = (getattr(request, "headers", None) or {}).get(HEADER)
    if not isinstance(carried, dict):
        return {}
    return {str(k): v for k, v in carried.items() if isinstance(v, dict) and k not in _NOT_CARRIED}
