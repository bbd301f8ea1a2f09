"""ASGI middleware: a real uvicorn process serving FastAPI with the middleware
and a TimberHandler pointed at the collector; 200 concurrent requests, each
with its own X-Request-ID and an await between two logs, never see another
request's id. Lifespan and websocket scopes pass through untouched, and a
failure of timber's own never reaches the request."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

import timber
from conftest import Collector
from fault_server import free_port
from integration_support import Process, logger_name, write_module
from timber.integrations.asgi import TimberMiddleware

APP = """
import asyncio, logging
import timber
from fastapi import FastAPI, Request
from timber.integrations.asgi import TimberMiddleware

handler = timber.TimberHandler(flush_interval=60)
for name in ("app", "timber.access"):
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
log = logging.getLogger("app")

app = FastAPI()
app.add_middleware(TimberMiddleware, access_log=True)


@app.get("/work")
async def work(request: Request) -> dict:
    sent = request.headers.get("x-request-id")
    log.info("first", extra={"sent_id": sent})
    await asyncio.sleep(0.01)
    log.info("second", extra={"sent_id": sent})
    return {"id": timber.context.collapse()["request"]["id"]}


@app.get("/boom")
async def boom() -> dict:
    raise RuntimeError("boom")
"""

REQUESTS = 200


def start_uvicorn(tmp_path: Path, collector: Collector) -> tuple[Process, str]:
    write_module(tmp_path, "asgi_app", APP)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1"]
    server = Process(
        [*command, "--port", str(port), "--log-level", "warning"], tmp_path, collector, "asgi"
    )
    server.wait_for_port(port)
    return server, f"http://127.0.0.1:{port}"


async def hit(base: str) -> tuple[list[tuple[str, httpx.Response]], list[httpx.Response]]:
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, trust_env=False) as c:
        ids = [f"req-{i:03d}-{'x' * (i % 7)}" for i in range(REQUESTS)]
        sent = await asyncio.gather(*(c.get("/work", headers={"X-Request-ID": i}) for i in ids))
        others = [
            await c.get("/work"),
            await c.get("/work", headers={"X-Request-ID": "bad id\twith spaces"}),
            await c.get(
                "/work",
                headers={
                    "X-Request-ID": "traced",
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                },
            ),
            await c.get("/boom", headers={"X-Request-ID": "boom"}),
        ]
    return list(zip(ids, sent, strict=True)), others


def test_uvicorn_concurrent_requests_never_see_another_requests_id(
    tmp_path: Path, collector: Collector
) -> None:
    server, base = start_uvicorn(tmp_path, collector)
    try:
        sent, (no_id, bad_id, _traced, boom) = asyncio.run(hit(base))
    finally:
        # uvicorn exits normally: the handler delivers at exit, no flush().
        assert server.stop(signal.SIGINT) == 0, server.stderr()

    for rid, response in sent:
        assert response.status_code == 200
        assert response.headers["x-request-id"] == rid
        assert response.json() == {"id": rid}
    generated = no_id.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert no_id.json() == {"id": generated}
    replaced = bad_id.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)
    assert boom.status_code == 500
    # Starlette answers an unhandled error outside every user middleware,
    # with a response the middleware never sees: no id header on it.

    frames = collector.frames("asgi")
    app = [f for f in frames if logger_name(f) == "app"]
    access = [f for f in frames if logger_name(f) == "timber.access"]
    assert len(app) == 2 * (REQUESTS + 3)
    valid = {rid for rid, _ in sent} | {"traced"}
    checked = [f for f in app if f["sent_id"] in valid]
    assert len(checked) == 2 * (REQUESTS + 1)
    assert [f for f in checked if f["context"]["request"]["id"] != f["sent_id"]] == []
    by_id: dict[str, list[str]] = {}
    for f in app:
        by_id.setdefault(f["context"]["request"]["id"], []).append(f["message"])
        assert f["context"]["request"]["method"] == "GET"
        assert f["context"]["request"]["path"] == "/work"
        assert f["context"]["request"]["client"] == "127.0.0.1"
    for rid, _ in sent:
        assert sorted(by_id[rid]) == ["first", "second"]
    assert sorted(by_id[generated]) == ["first", "second"]
    assert sorted(by_id[replaced]) == ["first", "second"]
    (trace,) = {
        f["context"]["request"].get("traceparent")
        for f in app
        if f["context"]["request"]["id"] == "traced"
    }
    assert trace == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert all(
        "traceparent" not in f["context"]["request"] for f in app if f["sent_id"] != "traced"
    )

    assert len(access) == REQUESTS + 4
    statuses = {f["context"]["request"]["id"]: (f["status"], f["level"]) for f in access}
    assert statuses["boom"] == (500, "error")
    assert all(statuses[rid] == (200, "info") for rid, _ in sent)
    assert all(isinstance(f["duration_ms"], float) and f["duration_ms"] >= 0 for f in access)
    assert access[0]["message"].startswith("GET /")


def test_lifespan_and_websocket_scopes_pass_through_untouched() -> None:
    seen: list[tuple[Any, Any, Any, bool]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send, timber.context.exists()))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    middleware = TimberMiddleware(app, access_log=True)
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    websocket = {"type": "websocket", "path": "/ws", "headers": [(b"x-request-id", b"w")]}
    for scope in (lifespan, websocket):
        asyncio.run(middleware(scope, receive, send))
    assert seen == [(lifespan, receive, send, False), (websocket, receive, send, False)]
    assert lifespan == {"type": "lifespan", "asgi": {"version": "3.0"}}


def test_starlette_lifespan_and_websocket_work_behind_the_middleware() -> None:
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text((await ws.receive_text()) + str(timber.context.exists()))
        await ws.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(TimberMiddleware)],
        lifespan=lifespan,
    )
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            ws.send_text("hello ")
            assert ws.receive_text() == "hello False"
    assert events == ["startup", "shutdown"]


class BrokenContext(timber.TimberContext):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("timber broke")


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": None},
        {"type": "http"},
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"x-request-id", b"\xff" * 300), (b"traceparent", b"garbage")],
            "client": ("::1", 1),
        },
    ],
)
@pytest.mark.parametrize("context", [None, BrokenContext()])
def test_timber_problems_never_reach_the_request(
    scope: dict[str, Any], context: timber.TimberContext | None
) -> None:
    sent: list[Any] = []
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(timber.context.collapse())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(TimberMiddleware(app, context=context)(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 204
    if context is None:
        rid = seen[0]["request"]["id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert sent[0]["headers"] == [(b"x-request-id", rid.encode())]
        assert "traceparent" not in seen[0]["request"]
    else:
        assert seen == [{}]


def test_litestar(collector: Collector, logger: logging.Logger) -> None:
    from litestar import Litestar, get
    from litestar.middleware import DefineMiddleware
    from litestar.testing import TestClient as LitestarClient

    handler = timber.TimberHandler(host=collector.url, api_key="k", source_id="litestar")
    logger.addHandler(handler)

    @get("/items")
    async def item() -> dict[str, Any]:
        logger.info("items")
        await asyncio.sleep(0)
        return timber.context.collapse()

    app = Litestar(
        route_handlers=[item],
        middleware=[DefineMiddleware(TimberMiddleware, access_log=True, logger=logger)],
        # Litestar's default logging setup runs dictConfig, which closes every
        # handler already made, timber's included.
        logging_config=None,
    )
    with LitestarClient(app) as client:
        response = client.get("/items", headers={"X-Request-ID": "lit-1"})
    assert response.headers["x-request-id"] == "lit-1"
    assert response.json()["request"] == {
        "method": "GET",
        "path": "/items",
        "id": "lit-1",
        "client": "testclient",
    }
    handler.flush()
    logged, access = collector.frames("litestar")
    assert logged["message"] == "items"
    assert logged["context"]["request"]["id"] == "lit-1"
    assert access["message"] == "GET /items 200"
    assert access["context"]["request"]["id"] == "lit-1"
