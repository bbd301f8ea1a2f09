"""A minimal OTLP/HTTP logs sink for the OpenTelemetry contender.

``POST /v1/logs`` is answered 200 with an empty ExportLogsServiceResponse;
records are counted by decoding the protobuf body with opentelemetry-proto
(installed with the OTLP exporter). ``GET /stats`` returns JSON: records,
requests, body bytes (and what gzip would make of them), the sink's own CPU
seconds and per-request handling times, to show it is not the bottleneck.

Run in the OpenTelemetry virtualenv: ``python otlp_sink.py [--gzip]``; the first line
on stdout is ``listening on http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import gzip
import json
import resource
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

EMPTY_RESPONSE = ExportLogsServiceResponse().SerializeToString()

#: Also gzip each body to report its compressed size (``--gzip``); off for
#: the timed workloads, so the sink stays as cheap as it can be.
MEASURE_GZIP = "--gzip" in sys.argv[1:]


class Counts:
    """What the sink has seen, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records = 0
        self.requests = 0
        self.bytes = 0
        self.gzip_bytes = 0
        self.handle_ms: list[float] = []
        self.last_store = 0.0

    def as_dict(self) -> dict[str, object]:
        with self.lock:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            ms = sorted(self.handle_ms)
            return {
                "records": self.records,
                "requests": self.requests,
                "bytes": self.bytes,
                "gzip_bytes": self.gzip_bytes,
                "cpu_s": ru.ru_utime + ru.ru_stime,
                "handle_ms_median": ms[len(ms) // 2] if ms else 0.0,
                "handle_ms_max": ms[-1] if ms else 0.0,
                "last_store": self.last_store,
            }

    def reset(self) -> None:
        with self.lock:
            self.records = self.requests = self.bytes = self.gzip_bytes = 0
            self.handle_ms = []
            self.last_store = 0.0


COUNTS = Counts()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        t0 = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/logs":
            self._answer(404, b"", "text/plain")
            return
        wire = len(body)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportLogsServiceRequest.FromString(body)
        n = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        squeezed = len(gzip.compress(body, 6)) if MEASURE_GZIP else 0
        self._answer(200, EMPTY_RESPONSE, "application/x-protobuf")
        with COUNTS.lock:
            COUNTS.records += n
            COUNTS.requests += 1
            COUNTS.bytes += wire
            COUNTS.gzip_bytes += squeezed
            COUNTS.handle_ms.append((time.perf_counter() - t0) * 1e3)
            COUNTS.last_store = time.monotonic()

    def do_GET(self) -> None:
        if self.path == "/stats":
            self._answer(200, json.dumps(COUNTS.as_dict()).encode(), "application/json")
        else:
            self._answer(404, b"", "text/plain")

    def do_DELETE(self) -> None:
        COUNTS.reset()
        self._answer(204, b"", "text/plain")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
