"""Custom context: structured data attached to every record logged inside a
``with timber.context(...)`` block.

Context lives in a :class:`contextvars.ContextVar`, so each thread and each
asyncio task sees only its own: one request's user never shows on another's
logs. Blocks nest and merge per top-level key, and unwind on exit, also when
an exception leaves the block.

Data every thread and task should carry (a service name, a deploy id) is set
once with :meth:`TimberContext.set_global`.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from timber._engine import GlobalContext, Snapshot

__all__ = ["TimberContext"]


#: Context keys the frame fills itself.
RESERVED = ("runtime", "system")


def _check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if args:
        raise ValueError(
            "context takes keyword arguments only, e.g. timber.context(user={'id': 123})"
        )
    for key, value in kwargs.items():
        if key in RESERVED:
            raise ValueError(f"context key {key!r} is reserved for timber's automatic context")
        if not isinstance(value, dict):
            raise ValueError(
                f"context value for {key!r} must be a dict, got {type(value).__name__}: "
                f"write timber.context({key}={{'value': ...}})"
            )


def _merge(base: dict[str, Any], update: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``base`` with each top-level key of ``update`` merged into it."""
    merged = dict(base)
    for key, value in update.items():
        previous = merged.get(key)
        merged[key] = {**previous, **value} if isinstance(previous, dict) else dict(value)
    return merged


class TimberContext:
    """An independent context. ``timber.context`` is the default one, shared
    by every handler and formatter that is not given another."""

    def __init__(self) -> None:
        self._var: ContextVar[Snapshot | None] = ContextVar(
            f"timber_context_{id(self):x}", default=None
        )
        # The engine is handed these two explicitly (see ``_sources``).
        self._global = GlobalContext()
        self._global_lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> _Block:
        """``with context(job={'id': 123}):`` adds ``job`` to the context of
        every record logged in the block."""
        _check(args, kwargs)
        return _Block(self, kwargs)

    def _sources(self) -> tuple[ContextVar[Snapshot | None], GlobalContext]:
        """What the engine reads: the per-thread/task variable and the
        global slot."""
        return self._var, self._global

    def _current(self) -> Snapshot | None:
        snapshot = self._var.get()
        return self._global.get() if snapshot is None else snapshot

    def exists(self) -> bool:
        """Whether any context is active here."""
        current = self._current()
        return current is not None and bool(current.data)

    def collapse(self) -> dict[str, Any]:
        """The merged context active here, as a new dict."""
        current = self._current()
        if current is None:
            return {}
        return {k: dict(v) if isinstance(v, dict) else v for k, v in current.data.items()}

    def set_global(self, *args: Any, **kwargs: Any) -> None:
        """Adds context seen by every thread and task, for records logged
        outside any block and in blocks entered from now on (a block keeps
        the global context it started with)."""
        _check(args, kwargs)
        with self._global_lock:
            current = self._global.get()
            base = current.data if current is not None else {}
            self._global.set(Snapshot(_merge(base, kwargs)))

    def clear_global(self) -> None:
        """Removes all global context."""
        with self._global_lock:
            self._global.set(None)


def resolve(context: TimberContext | None) -> TimberContext:
    """The context a handler or formatter uses: ``timber.context`` unless
    another ``TimberContext`` is given."""
    if context is None:
        from timber import context as default_context

        return default_context
    if not isinstance(context, TimberContext):
        raise ValueError(f"context must be a timber.TimberContext, got {type(context).__name__}")
    return context


class _Block:
    """One ``with`` block of a context. The same block object may be entered
    by several threads or tasks at once: each restores, on exit, what it
    replaced in its own context."""

    __slots__ = ("_context", "_update")

    def __init__(self, context: TimberContext, update: dict[str, dict[str, Any]]) -> None:
        self._context = context
        self._update = update

    def __enter__(self) -> TimberContext:
        ctx = self._context
        local = ctx._var.get()
        current = ctx._current()
        base = current.data if current is not None else {}
        ctx._var.set(Snapshot(_merge(base, self._update), local))
        return ctx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        var = self._context._var
        current = var.get()
        var.set(current.parent if current is not None else None)
