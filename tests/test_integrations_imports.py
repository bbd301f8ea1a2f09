"""``import timber`` imports no framework, and neither does importing an
integration module and taking its public names: each framework is imported
only when its integration is used. Checked in a fresh interpreter, since
this test process has imported them all."""

from __future__ import annotations

import json
import os

from fault_server import run_python

FRAMEWORKS = (
    "asgiref",
    "billiard",
    "celery",
    "django",
    "fastapi",
    "flask",
    "kombu",
    "loguru",
    "starlette",
    "structlog",
    "uvicorn",
    "werkzeug",
)

MODULES = ("asgi", "wsgi", "django", "celery", "structlog", "loguru")

CODE = """
import importlib, json, sys
FRAMEWORKS = {frameworks!r}

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in FRAMEWORKS)

seen = {{}}
import timber
seen["import timber"] = loaded()
seen["timber.integrations in sys.modules"] = "timber.integrations" in sys.modules
from timber.integrations import flush_after
seen["timber.integrations"] = loaded()
for name in {modules!r}:
    module = importlib.import_module("timber.integrations." + name)
    assert module.__all__
    for public in module.__all__:
        getattr(module, public)
    seen[name] = loaded()
print(json.dumps(seen))
"""


def test_no_framework_is_imported_until_used() -> None:
    proc = run_python(CODE.format(frameworks=FRAMEWORKS, modules=MODULES), dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen.pop("timber.integrations in sys.modules") is False
    assert seen == {name: [] for name in ("import timber", "timber.integrations", *MODULES)}


def test_using_the_framework_free_parts_imports_no_framework() -> None:
    # The ASGI and WSGI middlewares around plain apps, the structlog
    # processors and Django's RequestFilter on plain records need nothing
    # from any framework.
    code = (
        CODE.format(frameworks=FRAMEWORKS, modules=MODULES).replace("print(json.dumps(seen))", "")
        + """
import asyncio, logging
from timber.integrations import asgi, django, structlog, wsgi

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 204, "headers": []})

async def send(message):
    pass

asyncio.run(asgi.TimberMiddleware(app)({"type": "http", "headers": []}, None, send))
list(wsgi.TimberMiddleware(lambda environ, start: [b""])({}, lambda *a: None))
record = logging.LogRecord("x", 20, "f.py", 1, "m", None, None)
django.RequestFilter().filter(record)
structlog.render_to_log_kwargs(logging.getLogger("x"), "info", {"event": "e", "k": 1})
structlog.render_event(None, "info", {"event": "e"})
print(json.dumps(loaded()))
"""
    )
    proc = run_python(code, dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
