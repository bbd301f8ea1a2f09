"""The cost of ``timber.integrations.asgi.TimberMiddleware`` per request,
beside the same Starlette app with no middleware, in one process.

Each request is driven straight through the ASGI interface (no sockets, no
server), so what differs between the arms is the middleware alone: binding
the request context, the request id and its response header, and, in the
last arms, one access record per request, into a NullHandler (the
logging floor) and into a TimberHandler sending to a local collector. Arms alternate (ABBA) rep by rep; medians and the ratio to
the bare app are written to ``bench/results/asgi.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import timber
from timber.integrations.asgi import TimberMiddleware

RESULTS = Path(__file__).resolve().parent / "results" / "asgi.md"


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def app() -> Any:
    return Starlette(routes=[Route("/hello", hello)])


SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/hello",
    "raw_path": b"/hello",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench"), (b"x-request-id", b"r-1")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 80),
}


async def drive(asgi: Any, n: int) -> float:
    """Microseconds per request over `n` requests."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    t0 = time.perf_counter()
    for _ in range(n):
        await asgi(dict(SCOPE), receive, send)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps, n = (4, 500) if args.quick else (12, 2000)
    out = Path(tempfile.mkdtemp())
    collector = subprocess.Popen(
        [sys.executable, "-m", "timber", "collect", "--listen", "127.0.0.1:0", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert collector.stdout is not None
    url = collector.stdout.readline().split("listening on ", 1)[1].split(",")[0]
    handler = timber.TimberHandler(api_key="k", source_id="asgi", host=url)
    access = logging.getLogger("bench.asgi.access")
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    # The access record's floor: the same record into a NullHandler.
    floor = logging.getLogger("bench.asgi.floor")
    floor.handlers[:] = [logging.NullHandler()]
    floor.setLevel(logging.INFO)
    floor.propagate = False
    arms = {
        "Starlette, no middleware": app(),
        "TimberMiddleware (context, request id)": TimberMiddleware(app()),
        "TimberMiddleware, access_log=True, NullHandler": TimberMiddleware(
            app(), access_log=True, logger=floor
        ),
        "TimberMiddleware, access_log=True, TimberHandler": TimberMiddleware(
            app(), access_log=True, logger=access
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in arms}

    async def run() -> None:
        for asgi in arms.values():
            await drive(asgi, n // 5)
        for rep in range(reps):
            order = list(arms.items())
            if rep % 2:
                order.reverse()
            for name, asgi in order:
                times[name].append(await drive(asgi, n))

    asyncio.run(run())
    handler.flush()
    handler.close()
    collector.terminate()
    collector.wait()
    base = statistics.median(times["Starlette, no middleware"])
    lines = [
        "# ASGI middleware: cost per request",
        "",
        f"- {reps} reps of {n} requests per arm, alternating; median (min-max) µs per request",
        "- requests driven through the ASGI interface in one process (no sockets)",
        "",
        "| arm | µs/request | added µs | ratio to the bare app |",
        "| --- | --- | --- | --- |",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(
            f"| {name} | {med:.1f} ({min(ts):.1f}-{max(ts):.1f}) | {med - base:+.1f} | {med / base:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    if not args.quick:
        RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
