"""Framework integrations, one small module each, and ``flush_after`` for
short-lived runtimes.

Each module imports its framework only when it is used, so ``import timber``
and ``import timber.integrations.<name>`` never import Django, Celery,
Starlette, structlog or loguru:

- ``timber.integrations.asgi``: ``TimberMiddleware`` for FastAPI, Starlette,
  Litestar and Django under ASGI.
- ``timber.integrations.wsgi``: ``TimberMiddleware`` for Flask and any WSGI app.
- ``timber.integrations.django``: ``TimberMiddleware`` and ``RequestFilter``.
- ``timber.integrations.celery``: ``setup()``: context travels with tasks.
- ``timber.integrations.structlog``: processors for structlog's stdlib routes.
- ``timber.integrations.loguru``: ``sink(handler)``.
"""

from __future__ import annotations

from timber.integrations._flush import flush_after

__all__ = ["flush_after"]
