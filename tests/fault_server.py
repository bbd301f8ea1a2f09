"""A scripted Timber endpoint on 127.0.0.1 for fault injection: answers each
request with the next step of a script (a status, a hang, a dropped
connection), then 202; decodes every body with the reference msgpack."""

from __future__ import annotations

import gzip
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgpack


def timber_env(host: str, api_key: str = "k", source_id: str = "s", **extra: str) -> dict[str, str]:
    """This process's environment with a TimberHandler's settings for `host`."""
    env = {**os.environ, "TIMBER_HOST": host, "TIMBER_API_KEY": api_key}
    env["TIMBER_SOURCE_ID"] = source_id
    env.update(extra)
    return env


def run_python(
    code: str, env: dict[str, str], python: str = sys.executable, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs `code` (dedented) in a fresh interpreter and captures its output."""
    return subprocess.run(
        [python, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A loopback port nothing listens on (for now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    frames: list[dict[str, Any]]
    status: int | str
    size: int
    received: float = field(default_factory=time.monotonic)
    #: The body as received, decompressed.
    body: bytes = b""


@dataclass
class Step:
    """One scripted answer: an HTTP status (with an optional Retry-After or
    Location), ``"hang"`` (answer nothing for ``seconds``), or ``"reset"``
    (close the connection without answering)."""

    status: int | str
    retry_after: str | None = None
    seconds: float = 0.0
    location: str | None = None
    body: bytes = b""


@dataclass
class FaultServer:
    script: list[Step | int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    port_wanted: int = 0
    tls: ssl.SSLContext | None = None
    #: The answer when the script is empty (OTLP answers 200).
    default_status: int = 202

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def refuse(self) -> None:
                # Any other method is recorded too (a client following a
                # redirect may turn the POST into a GET), and refused.
                with server._lock:
                    server.requests.append(
                        Request(self.path, dict(self.headers.items()), [], self.command, 0)
                    )
                    server._lock.notify_all()
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_DELETE = refuse

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                step = server._next_step()
                msgpack_body = self.headers.get("Content-Type", "") == "application/msgpack"
                frames = (
                    msgpack.unpackb(body, raw=False)
                    if step.status in (200, 202) and msgpack_body
                    else []
                )
                with server._lock:
                    server.requests.append(
                        Request(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            frames,
                            step.status,
                            len(body),
                            body=body,
                        )
                    )
                    server._lock.notify_all()
                if step.status == "hang":
                    time.sleep(step.seconds)
                    self.close_connection = True
                    return
                if step.status == "reset":
                    self.close_connection = True
                    return
                self.send_response(int(step.status))
                if step.retry_after is not None:
                    self.send_header("Retry-After", step.retry_after)
                if step.location is not None:
                    self.send_header("Location", step.location)
                self.send_header("Content-Length", str(len(step.body)))
                self.end_headers()
                self.wfile.write(step.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port_wanted), Handler)
        self.httpd.daemon_threads = True
        if self.tls is not None:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _next_step(self) -> Step:
        with self._lock:
            if not self.script:
                return Step(self.default_status)
            step = self.script.pop(0)
        return step if isinstance(step, Step) else Step(step)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def host(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def frames(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f for r in self.requests for f in r.frames]

    def wait_for_frames(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(len(r.frames) for r in self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
        return self.frames

    def add_script(self, steps: Iterable[Step | int]) -> None:
        with self._lock:
            self.script.extend(steps)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1 that tunnels ``CONNECT host:port`` (what
    HTTP clients send to a proxy) and remembers each target."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        self.targets.append(target)
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                dst.close()

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self) -> None:
        self.listener.close()
