"""The receiving side of the benchmark, all on 127.0.0.1: the bundled
collector (``timber collect``), the OTLP sink, a counting proxy in front of
the collector, a sink that never answers, and a counter of stored records.
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import socket
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

BENCH = Path(__file__).resolve().parent

_URL = re.compile(r"(http://127\.0\.0\.1:\d+)")


def _first_url(proc: subprocess.Popen[str], what: str, timeout: float = 30.0) -> str:
    """The URL a freshly started server prints on its first stdout line."""
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        found.append(proc.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    match = _URL.search(found[0]) if found else None
    if match is None:
        proc.kill()
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"{what} did not start: {found[:1]} {err}")
    return match.group(1)


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a running process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 (utime, stime), counted after the ")" that ends comm.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Collector:
    """``timber collect`` (or the ``timber-collector`` binary) on a free port,
    storing into its own directory."""

    def __init__(self, command: list[str], out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            # logtail posts to the root: its records are filed with ours.
            [
                *command,
                "--listen",
                "127.0.0.1:0",
                "--out",
                str(out),
                "--quiet",
                "--root-source",
                "bench",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = _first_url(self.proc, "the collector")
        self.cpu_start = proc_cpu_seconds(self.proc.pid)

    def stored(self, source: str) -> RecordCounter:
        """A counter of the records stored for ``source``."""
        return RecordCounter(self.out / f"{source}.ndjson")

    def cpu(self) -> float:
        """CPU seconds the collector used since it started listening."""
        return proc_cpu_seconds(self.proc.pid) - self.cpu_start

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RecordCounter:
    """Counts the lines of an NDJSON file as it grows, reading only what was
    added since the last look, and remembers when the count last changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0
        self.changed_at = 0.0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        if data:
            self.offset += len(data)
            self.count += data.count(b"\n")
            self.changed_at = time.monotonic()
        return self.count


class OtlpSink:
    """``otlp_sink.py`` running in the OpenTelemetry virtualenv."""

    def __init__(self, python: Path, measure_gzip: bool = False) -> None:
        args = [str(python), str(BENCH / "otlp_sink.py")]
        if measure_gzip:
            args.append("--gzip")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.url = _first_url(self.proc, "the OTLP sink")

    def stats(self) -> dict[str, Any]:
        import json

        conn = http.client.HTTPConnection("127.0.0.1", int(self.url.rsplit(":", 1)[1]), 5)
        try:
            conn.request("GET", "/stats")
            result: dict[str, Any] = json.loads(conn.getresponse().read())
            return result
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> OtlpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _decoded(body: bytes, encoding: str | None) -> bytes | None:
    """The body before its content encoding; None if the standard library
    cannot decode it (zstd before Python 3.14)."""
    if encoding in (None, "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return None


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: ClassVar[CountingProxy]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding")
        plain = _decoded(body, encoding)
        if plain is None:
            self.proxy.record(len(body), None, None, encoding)
        else:
            self.proxy.record(len(body), len(plain), len(gzip.compress(plain, 6)), encoding)
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() in ("authorization", "content-type", "content-encoding")
        }
        conn = http.client.HTTPConnection(self.proxy.target_host, self.proxy.target_port, 30)
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            status = resp.status
        finally:
            conn.close()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


class CountingProxy:
    """Forwards POSTs to the collector and adds up the request bodies: on the
    wire, decoded, and what gzip (level 6) would make of them."""

    def __init__(self, target_url: str) -> None:
        host, port = target_url.removeprefix("http://").split(":")
        self.target_host, self.target_port = host, int(port)
        self.lock = threading.Lock()
        self.requests = 0
        self.wire_bytes = 0
        self.plain_bytes = 0
        self.gzip_bytes = 0
        self.encodings: set[str] = set()
        self.undecoded = False
        handler = type("Handler", (_ProxyHandler,), {"proxy": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(
        self, wire: int, plain: int | None, squeezed: int | None, encoding: str | None
    ) -> None:
        """Adds one request; ``plain`` and ``squeezed`` are None when its
        body could not be decoded, which leaves those totals unknown."""
        with self.lock:
            self.requests += 1
            self.wire_bytes += wire
            if plain is None or squeezed is None:
                self.undecoded = True
            else:
                self.plain_bytes += plain
                self.gzip_bytes += squeezed
            self.encodings.add(encoding or "identity")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HangingSink:
    """Accepts connections and never reads nor answers: an endpoint in an
    outage that times every request out."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()

    def __enter__(self) -> HangingSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
