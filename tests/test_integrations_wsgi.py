"""WSGI middleware: Flask's test client, and a real gunicorn with sync workers
serving concurrent requests, each with its own X-Request-ID; records logged
in the view and while a streamed response is iterated carry their request's
context, and nothing of it is left bound after the response."""

from __future__ import annotations

import logging
import re
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import flask
import pytest

import timber
from conftest import Collector
from fault_server import free_port
from integration_support import Process, logger_name, write_module
from timber.integrations.wsgi import TimberMiddleware

APP = """
import logging, time
import flask
import timber
from timber.integrations.wsgi import TimberMiddleware

handler = timber.TimberHandler(flush_interval=60)
for name in ("app", "timber.access"):
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
log = logging.getLogger("app")

app = flask.Flask("wsgi_app")
app.wsgi_app = TimberMiddleware(app.wsgi_app, access_log=True)


@app.get("/work")
def work():
    sent = flask.request.headers.get("X-Request-ID")
    log.info("first", extra={"sent_id": sent})
    time.sleep(0.005)
    log.info("second", extra={"sent_id": sent})
    return {"id": timber.context.collapse()["request"]["id"]}
"""

REQUESTS = 60


def test_gunicorn_sync_workers_keep_each_requests_context(
    tmp_path: Path, collector: Collector
) -> None:
    write_module(tmp_path, "wsgi_app", APP)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync", "--threads", "1"]
    server = Process(
        [*command, "-b", f"127.0.0.1:{port}", "wsgi_app:app"],
        tmp_path,
        collector,
        "wsgi",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(rid: str) -> tuple[str, str, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/work")
        request.add_header("X-Request-ID", rid)
        with opener.open(request, timeout=60) as response:
            return rid, response.headers["X-Request-ID"], response.read()

    try:
        server.wait_for_port(port)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(get, [f"w-{i}" for i in range(REQUESTS)]))
    finally:
        # gunicorn's workers exit normally: each handler delivers at exit.
        assert server.stop() == 0, server.stderr()

    for rid, echoed, body in answers:
        assert echoed == rid
        assert body == f'{{"id":"{rid}"}}\n'.encode()
    frames = collector.frames("wsgi")
    app = [f for f in frames if logger_name(f) == "app"]
    access = [f for f in frames if logger_name(f) == "timber.access"]
    assert len(app) == 2 * REQUESTS
    assert [f for f in app if f["context"]["request"]["id"] != f["sent_id"]] == []
    assert {f["context"]["request"]["id"] for f in app} == {rid for rid, _, _ in answers}
    assert sorted(f["context"]["request"]["id"] for f in access) == sorted(
        rid for rid, _, _ in answers
    )
    assert {f["status"] for f in access} == {200}


@pytest.fixture
def flask_app(collector: Collector, logger: logging.Logger) -> Iterator[tuple[flask.Flask, Any]]:
    handler = timber.TimberHandler(
        host=collector.url, api_key="k", source_id="flask", flush_interval=60
    )
    logger.addHandler(handler)
    app = flask.Flask("flask_test")
    app.wsgi_app = TimberMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, access_log=True, logger=logger
    )

    @app.get("/hello/<name>")
    def hello(name: str) -> dict[str, Any]:
        logger.info("hello %s", name)
        return {"context": timber.context.collapse()}

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for i in range(3):
                logger.info("chunk %d", i)
                yield f"{i};"

        return flask.Response(chunks())

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    # Flask logs an unhandled exception to app.logger.
    app.logger.addHandler(handler)
    yield app, handler
    app.logger.removeHandler(handler)


def test_flask_test_client(flask_app: tuple[flask.Flask, Any], collector: Collector) -> None:
    app, handler = flask_app
    client = app.test_client()
    # buffered: the test client reads and closes the response, as a server does.
    response = client.get(
        "/hello/ann",
        buffered=True,
        headers={
            "X-Request-ID": "abc",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        },
    )
    assert response.headers["X-Request-ID"] == "abc"
    assert response.json == {
        "context": {
            "request": {
                "method": "GET",
                "path": "/hello/ann",
                "id": "abc",
                "client": "127.0.0.1",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            }
        }
    }
    streamed = client.get("/stream", buffered=True)
    assert streamed.data == b"0;1;2;"
    generated = streamed.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.get("/boom", headers={"X-Request-ID": "boom"}, buffered=True).status_code == 500
    # Nothing stays bound once a response is done.
    assert not timber.context.exists()

    handler.flush()
    frames = collector.frames("flask")
    by_message = {f["message"]: f["context"]["request"]["id"] for f in frames}
    assert by_message["hello ann"] == "abc"
    assert [by_message[f"chunk {i}"] for i in range(3)] == [generated] * 3
    access = {
        f["message"]: (f["status"], f["context"]["request"]["id"]) for f in frames if "status" in f
    }
    assert len(access) == 3
    assert access["GET /hello/ann 200"] == (200, "abc")
    assert access["GET /stream 200"] == (200, generated)
    # Flask turns the exception into its own 500 response inside the middleware.
    assert access["GET /boom 500"] == (500, "boom")
    errors = [f for f in frames if f["level"] == "error" and "error" in f]
    assert errors and errors[0]["context"]["request"]["id"] == "boom"


def test_an_exception_escaping_the_app_is_logged_and_reraised(
    collector: Collector, logger: logging.Logger
) -> None:
    handler = timber.TimberHandler(host=collector.url, api_key="k", source_id="raw")
    logger.addHandler(handler)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise ValueError("escaped")

    middleware = TimberMiddleware(app, access_log=True, logger=logger)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/x", "HTTP_X_REQUEST_ID": "e1"}
    with pytest.raises(ValueError, match="escaped"):
        middleware(environ, lambda *a: None)
    assert not timber.context.exists()
    handler.flush()
    (frame,) = collector.frames("raw")
    assert frame["message"] == "POST /x 500"
    assert frame["context"]["request"]["id"] == "e1"


class BrokenContext(timber.TimberContext):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("timber broke")


@pytest.mark.parametrize("context", [None, BrokenContext()])
def test_timber_problems_never_reach_the_request(context: timber.TimberContext | None) -> None:
    seen: list[dict[str, Any]] = []
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(timber.context.collapse())
        start_response("204 No Content", [])
        return [b""]

    # No REMOTE_ADDR, an id header too long and a bad traceparent.
    environ = {"HTTP_X_REQUEST_ID": "x" * 300, "HTTP_TRACEPARENT": "garbage"}
    middleware = TimberMiddleware(app, access_log=True, context=context)
    body = middleware(environ, lambda status, headers, *exc: started.append((status, headers)))
    assert list(body) == [b""]
    getattr(body, "close", lambda: None)()
    assert started[0][0] == "204 No Content"
    if context is None:
        rid = seen[0]["request"]["id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert seen[0]["request"]["client"] is None
        assert "traceparent" not in seen[0]["request"]
        assert started[0][1] == [("x-request-id", rid)]
    else:
        assert seen == [{}]
        assert started[0][1] == []
