"""Django: the middleware with Django's test Client (sync) and AsyncClient
(async), after AuthenticationMiddleware, binds request and user; Django's own
``django.request`` record of a 500 reaches the collector with its backtrace
and, through RequestFilter, a clean request dict; ``check`` is clean."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import timber
from conftest import Collector
from fault_server import FaultServer, run_python, timber_env
from timber.integrations.django import RequestFilter

log = logging.getLogger("django_app")


def hello(request: HttpRequest) -> HttpResponse:
    log.info("hello sync")
    return JsonResponse(timber.context.collapse())


async def ahello(request: HttpRequest) -> HttpResponse:
    log.info("hello async")
    await asyncio.sleep(0)
    return JsonResponse(timber.context.collapse())


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom in a view")


urlpatterns = [path("hello", hello), path("ahello", ahello), path("boom", boom)]


@pytest.fixture(scope="module")
def django_db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Django configured for this module, with a migrated SQLite file and a
    user; returns the user."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    db = tmp_path_factory.mktemp("django") / "db.sqlite3"
    settings.configure(
        SECRET_KEY="not-a-secret",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "timber.integrations.django.TimberMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    return User.objects.create_user("ann", password="pw")


@pytest.fixture
def shipped(collector: Collector, django_db: Any) -> Iterator[timber.TimberHandler]:
    """A TimberHandler with RequestFilter on the app's and Django's loggers."""
    handler = timber.TimberHandler(
        host=collector.url, api_key="k", source_id="django", flush_interval=60
    )
    handler.addFilter(RequestFilter())
    loggers = [logging.getLogger(name) for name in ("django_app", "django.request")]
    for logger in loggers:
        logger.addHandler(handler)
    log.setLevel(logging.INFO)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)
    handler.close()


def test_sync_client_binds_request_and_user(
    shipped: timber.TimberHandler, collector: Collector, django_db: Any
) -> None:
    from django.test import Client

    client = Client()
    anonymous = client.get("/hello", headers={"X-Request-ID": "anon-1"})
    assert anonymous.headers["X-Request-ID"] == "anon-1"
    assert anonymous.json() == {
        "request": {"method": "GET", "path": "/hello", "id": "anon-1", "client": "127.0.0.1"}
    }
    client.force_login(django_db)
    signed_in = client.get("/hello")
    rid = signed_in.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert signed_in.json()["user"] == {"id": django_db.pk}
    assert signed_in.json()["request"]["id"] == rid

    shipped.flush()
    frames = [f for f in collector.frames("django") if f["message"] == "hello sync"]
    assert [f["context"]["request"]["id"] for f in frames] == ["anon-1", rid]
    assert "user" not in frames[0]["context"]
    assert frames[1]["context"]["user"] == {"id": django_db.pk}


def test_async_client_binds_request_and_user(
    shipped: timber.TimberHandler, collector: Collector, django_db: Any
) -> None:
    from django.test import AsyncClient

    async def visit() -> list[Any]:
        client = AsyncClient()
        anonymous = await client.get("/ahello", headers={"X-Request-ID": "a-1"})
        await client.aforce_login(django_db)
        signed_in = await client.get("/ahello", headers={"X-Request-ID": "a-2"})
        return [anonymous, signed_in]

    anonymous, signed_in = asyncio.run(visit())
    assert anonymous.headers["X-Request-ID"] == "a-1"
    assert "user" not in anonymous.json()
    assert signed_in.json() == {
        "request": {"method": "GET", "path": "/ahello", "id": "a-2", "client": "127.0.0.1"},
        "user": {"id": django_db.pk},
    }
    shipped.flush()
    frames = [f for f in collector.frames("django") if f["message"] == "hello async"]
    assert [f["context"]["request"]["id"] for f in frames] == ["a-1", "a-2"]
    assert frames[1]["context"]["user"] == {"id": django_db.pk}


def test_a_500_is_stored_with_backtrace_and_a_clean_request(
    shipped: timber.TimberHandler, collector: Collector
) -> None:
    from django.test import Client

    response = Client(raise_request_exception=False).get("/boom", headers={"X-Request-ID": "b-1"})
    assert response.status_code == 500
    shipped.flush()
    (frame,) = [
        f
        for f in collector.frames("django")
        if f["context"]["runtime"]["logger_name"] == "django.request"
    ]
    assert frame["level"] == "error"
    assert frame["message"] == "Internal Server Error: /boom"
    assert frame["request"] == {"method": "GET", "path": "/boom", "status_code": 500}
    assert frame["status_code"] == 500
    assert frame["context"]["request"]["id"] == "b-1"
    assert frame["error"]["name"] == "RuntimeError"
    assert frame["error"]["message"] == "boom in a view"
    assert frame["error"]["backtrace"][-1]["function"] == "boom"


def test_request_filter_leaves_other_records_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, "f.py", 1, "m", None, None)
    record.request = object()
    assert RequestFilter().filter(record) in (True, record)
    assert not isinstance(record.request, dict)


def test_check_is_clean(django_db: Any) -> None:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("check", stdout=out)
    assert out.getvalue().strip() == "System check identified no issues (0 silenced)."


README_PROJECT = """
import logging
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path


def view(request):
    logging.getLogger("my-app").info("in the view")
    return HttpResponse("ok")


def boom(request):
    raise RuntimeError("boom")


urlpatterns = [path("ok", view), path("boom", boom)]

settings.configure(
    SECRET_KEY="not-a-secret",
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    DATABASES={},
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    # As in the README:
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "timber.integrations.django.TimberMiddleware",
    ],
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"timber_request": {"()": "timber.integrations.django.RequestFilter"}},
        "handlers": {
            "timber": {
                "class": "timber.TimberHandler",
                "api_key": "YOUR_API_KEY",
                "source_id": "YOUR_SOURCE_ID",
                "filters": ["timber_request"],
            },
        },
        "loggers": {
            "django": {"handlers": ["timber"], "level": "INFO"},
            "my-app": {"handlers": ["timber"], "level": "INFO"},
        },
    },
)
django.setup()
from django.test import Client

client = Client(raise_request_exception=False)
assert client.get("/ok", headers={"X-Request-ID": "r-ok"}).status_code == 200
assert client.get("/boom", headers={"X-Request-ID": "r-boom"}).status_code == 500
"""


def test_the_readme_settings_in_a_fresh_process(server: FaultServer) -> None:
    proc = run_python(README_PROJECT, timber_env(server.host))
    assert proc.returncode == 0, proc.stderr
    view, error = server.wait_for_frames(2)
    assert view["message"] == "in the view"
    assert view["context"]["request"]["id"] == "r-ok"
    assert error["context"]["runtime"]["logger_name"] == "django.request"
    assert error["request"] == {"method": "GET", "path": "/boom", "status_code": 500}
    assert error["context"]["request"]["id"] == "r-boom"
    assert error["error"]["name"] == "RuntimeError"


class BrokenContext(timber.TimberContext):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("timber broke")


def test_timber_problems_never_reach_the_request(django_db: Any) -> None:
    from django.test import RequestFactory

    from timber.integrations.django import TimberMiddleware

    class Broken(TimberMiddleware):
        context = BrokenContext()

    request = RequestFactory().get("/hello", headers={"X-Request-ID": "x"})
    response = Broken(hello)(request)
    assert response.status_code == 200
    assert json.loads(response.content) == {}
    assert "X-Request-ID" not in response
