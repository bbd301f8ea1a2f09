"""A current ClickHouse for the tests, over HTTP on loopback.

The engine is real ClickHouse: chdb (the `chdb-core` package) embeds the
current server's engine in a Python module, so tables, types (Map,
DateTime64, LowCardinality), parsing, error codes and insert deduplication
are ClickHouse's own. The HTTP layer in front of it is ours, and it covers
only the subset of ClickHouse's HTTP interface that the handler and the tests
use:

- `GET /ping` answers `Ok.`;
- `POST /?query=...` runs the query with the request body appended (for
  `INSERT ... FORMAT JSONEachRow` the body is the data); without `query` the
  body is the query; `GET /?query=...` runs the query alone;
- every other URL parameter is a ClickHouse setting, applied with `SET` for
  that request only (an unknown one is refused with code 115, as a server
  does); `default_format` chooses the output format (TabSeparated otherwise);
- `Content-Encoding: gzip` request bodies;
- `X-ClickHouse-User` / `X-ClickHouse-Key` (or `user` / `password` in the
  URL) checked against the user given on the command line: a wrong pair is
  answered 403 with code 516 (AUTHENTICATION_FAILED);
- errors answered as a current server answers them: the status its
  `exceptionCodeToHTTPStatus` gives the code (400 for a parse error, 404 for
  an unknown table or setting, 500 for the rest), the body
  `Code: N. DB::Exception: ...`, and the header `X-ClickHouse-Exception-Code`.

Not covered: sessions, the `database` parameter, output compression, query
parameters (`param_*`), request encodings other than gzip. One query runs at
a time (a lock around the one chdb session).

Two control endpoints are the tests' own: `POST /_fault?inserts=N&hold=S`
makes the next N inserts that succeed be stored and then left unanswered
for S seconds, after which the connection is closed (an answer lost after
the server stored the rows); `POST /_fault?queries=N&delay=S` makes the next
N queries that are not inserts (`SELECT`, `DESCRIBE`, `CREATE`) wait S
seconds before they run (a server too busy to answer in time); `GET /_log` lists the requests served, as JSON
(first line of the query, settings, request encoding, status, code).

Run as `python chdb_server.py --path DIR --user U --password P [--port N]`:
it prints `chdb-server listening on http://127.0.0.1:PORT (ClickHouse V)`
once it serves. `ChdbServer` starts it as a subprocess and talks to it."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

USER, PASSWORD = "writer", "s3cret"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# URL parameters of ClickHouse's HTTP interface that are not settings.
NOT_SETTINGS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
    }
)

# ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp, by error name
# (chdb's messages end with it); every other code is 500.
STATUS_BY_NAME = {
    401: ("REQUIRED_PASSWORD",),
    403: (
        "UNKNOWN_USER",
        "WRONG_PASSWORD",
        "AUTHENTICATION_FAILED",
        "SET_NON_GRANTED_ROLE",
        "ACCESS_DENIED",
    ),
    400: (
        "BAD_ARGUMENTS",
        "CANNOT_COMPILE_REGEXP",
        "CANNOT_PARSE_TEXT",
        "CANNOT_PARSE_ESCAPE_SEQUENCE",
        "CANNOT_PARSE_QUOTED_STRING",
        "CANNOT_PARSE_DATE",
        "CANNOT_PARSE_DATETIME",
        "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
        "CANNOT_PARSE_IPV4",
        "CANNOT_PARSE_IPV6",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        "CANNOT_PARSE_UUID",
        "DUPLICATE_COLUMN",
        "ILLEGAL_COLUMN",
        "UNKNOWN_ELEMENT_IN_AST",
        "UNKNOWN_TYPE_OF_AST_NODE",
        "THERE_IS_NO_COLUMN",
        "TOO_DEEP_AST",
        "TOO_BIG_AST",
        "UNEXPECTED_AST_STRUCTURE",
        "SYNTAX_ERROR",
        "INCORRECT_DATA",
        "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    ),
    404: (
        "UNKNOWN_TABLE",
        "UNKNOWN_FUNCTION",
        "UNKNOWN_IDENTIFIER",
        "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE",
        "UNKNOWN_DATABASE",
        "UNKNOWN_SETTING",
        "UNKNOWN_DIRECTION_OF_SORTING",
        "UNKNOWN_AGGREGATE_FUNCTION",
        "UNKNOWN_FORMAT",
        "UNKNOWN_DATABASE_ENGINE",
        "UNKNOWN_TYPE_OF_QUERY",
        "UNKNOWN_ROLE",
    ),
    413: ("QUERY_IS_TOO_LARGE",),
    501: ("NOT_IMPLEMENTED",),
    503: ("SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"),
    411: ("HTTP_LENGTH_REQUIRED",),
    408: ("TIMEOUT_EXCEEDED",),
    415: ("UNSUPPORTED_MEDIA_TYPE",),
}
HTTP_STATUS = {name: status for status, names in STATUS_BY_NAME.items() for name in names}


def http_error(message: str) -> tuple[int, int, str]:
    """(status, code, body) of an error from chdb's exception text."""
    match = re.match(r"\s*Code:\s*(\d+)", message)
    code = int(match.group(1)) if match else 1001  # STD_EXCEPTION
    names = re.findall(r"\(([A-Z][A-Z0-9_]+)\)", message)
    status = HTTP_STATUS.get(names[-1], 500) if names else 500
    if match is None:
        message = f"Code: {code}. DB::Exception: {message}"
    return status, code, message


def quote(value: str) -> str:
    """A ClickHouse string literal (settings take any value as one)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """The one chdb session, one query at a time."""

    def __init__(self, path: str, user: str, password: str) -> None:
        from chdb.session import Session

        self.session = Session(path)
        self.lock = threading.Lock()
        self.user, self.password = user, password
        self.version = self.run("SELECT version()", {}, "TabSeparated").strip()
        self.faults = {"inserts": 0, "hold": 0.0, "queries": 0, "delay": 0.0}
        self.log: list[dict[str, Any]] = []

    def run(self, sql: str, settings: dict[str, str], fmt: str) -> str:
        """The query's output; chdb's exception if it fails. The settings
        hold for this query only."""
        with self.lock:
            done = []
            try:
                for name, value in settings.items():
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                        raise RuntimeError(
                            f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)"
                        )
                    self.session.query(f"SET {name} = {quote(value)}", "TabSeparated")
                    done.append(name)
                result = self.session.query(sql, fmt)
                return bytes(result.bytes()).decode("utf-8", "replace")
            finally:
                for name in done:
                    self.session.query(f"SET {name} = DEFAULT", "TabSeparated")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/ping":
            self.answer(200, b"Ok.\n")
        elif url.path == "/_log":
            with self.server.engine.lock:
                body = json.dumps(self.server.engine.log).encode()
            self.answer(200, body, {"Content-Type": "application/json"})
        else:
            self.query(b"", "")

    def do_POST(self) -> None:
        body = self.body()
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_fault":
            params = dict(urllib.parse.parse_qsl(url.query))
            with self.server.engine.lock:
                self.server.engine.faults = {
                    "inserts": int(params.get("inserts", "0")),
                    "hold": float(params.get("hold", "5")),
                    "queries": int(params.get("queries", "0")),
                    "delay": float(params.get("delay", "5")),
                }
            self.answer(200, b"")
            return
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        self.query(body, encoding)

    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    return bytes(out)
                out += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def query(self, body: bytes, encoding: str) -> None:
        engine = self.server.engine
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        user = self.headers.get("X-ClickHouse-User") or params.get("user") or "default"
        key = self.headers.get("X-ClickHouse-Key") or params.get("password") or ""
        settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS}
        text = body.decode("utf-8", "replace")
        sql = params["query"] + "\n" + text if "query" in params else text
        entry: dict[str, Any] = {
            "query": sql.split("\n", 1)[0][:200],
            "settings": settings,
            "encoding": encoding,
        }
        if (user, key) != (engine.user, engine.password):
            self.error(
                entry,
                f"Code: 516. DB::Exception: {user}: Authentication failed: password is "
                "incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)",
            )
            return
        fmt = params.get("default_format", "TabSeparated")
        delay = 0.0
        with engine.lock:
            if sql.lstrip()[:6].upper() != "INSERT" and engine.faults["queries"] > 0:
                engine.faults["queries"] -= 1
                delay = engine.faults["delay"]
        time.sleep(delay)
        try:
            out = engine.run(sql, settings, fmt)
        except Exception as e:  # chdb's ChdbError, or anything it raised
            self.error(entry, str(e))
            return
        hold = 0.0
        with engine.lock:
            if sql.lstrip()[:6].upper() == "INSERT" and engine.faults["inserts"] > 0:
                engine.faults["inserts"] -= 1
                hold = engine.faults["hold"]
            engine.log.append(entry | {"status": 200, "lost": hold > 0})
        if hold:
            # Stored; the answer never comes.
            time.sleep(hold)
            self.close_connection = True
            return
        self.answer(200, out.encode(), {"Content-Type": "text/tab-separated-values; charset=UTF-8"})

    def error(self, entry: dict[str, Any], message: str) -> None:
        status, code, text = http_error(message)
        if "(version " not in text:
            text += f" (version {self.server.engine.version})"
        with self.server.engine.lock:
            self.server.engine.log.append(entry | {"status": status, "code": code})
        self.answer(
            status,
            (text + "\n").encode(),
            {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(code),
            },
        )

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, engine: Engine) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.engine = engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="the database directory")
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument("--user", default=USER)
    parser.add_argument("--password", default=PASSWORD)
    args = parser.parse_args()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    engine = Engine(args.path, args.user, args.password)
    server = Server(args.port, engine)
    print(
        f"chdb-server listening on http://127.0.0.1:{server.server_address[1]} "
        f"(ClickHouse {engine.version})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.session.close()


class ChdbServer:
    """`python chdb_server.py` as a subprocess, and a client of it."""

    def __init__(self, root: Path, timezone: str = "UTC", port: int = 0) -> None:
        """`timezone` is the server's own (`TZ`), in which it reads times
        that do not name a zone; `port` 0 is a free one."""
        root.mkdir(parents=True, exist_ok=True)
        self.stderr_path = root / "server.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--path", str(root / "db"), "--port", str(port)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=os.environ | {"TZ": timezone},
            )
        assert self.proc.stdout is not None
        self.banner = self.proc.stdout.readline()
        match = re.search(
            r"listening on (http://127\.0\.0\.1:\d+) \(ClickHouse (\S+)\)", self.banner
        )
        if match is None:
            self.close()
            raise AssertionError(
                f"chdb_server.py did not start: {self.banner!r} {self.stderr_path.read_text()!r}"
            )
        self.url, self.version = match.group(1), match.group(2)

    def post(
        self,
        body: bytes,
        params: dict[str, str] | None = None,
        user: str = USER,
        key: str = PASSWORD,
    ) -> tuple[int, dict[str, str], str]:
        """(status, headers, body) of one request, errors included."""
        url = self.url + "/?" + urllib.parse.urlencode(params or {})
        request = urllib.request.Request(
            url, data=body, headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": key}
        )
        try:
            with _OPENER.open(request, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, dict(e.headers), e.read().decode()

    def query(self, sql: str) -> str:
        status, _, text = self.post(sql.encode())
        assert status == 200, text
        return text

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.query(sql + " FORMAT JSONEachRow").splitlines()]

    def lose_answers(self, inserts: int, hold: float) -> None:
        """The next `inserts` inserts are stored, then never answered."""
        with _OPENER.open(
            urllib.request.Request(f"{self.url}/_fault?inserts={inserts}&hold={hold}", b""),
            timeout=10,
        ):
            pass

    def delay_queries(self, queries: int, delay: float) -> None:
        """The next `queries` queries that are not inserts wait `delay` s."""
        with _OPENER.open(
            urllib.request.Request(f"{self.url}/_fault?queries={queries}&delay={delay}", b""),
            timeout=10,
        ):
            pass

    def log(self) -> list[dict[str, Any]]:
        """Every request served so far: query (first line), settings, status."""
        with _OPENER.open(f"{self.url}/_log", timeout=10) as r:
            entries: list[dict[str, Any]] = json.loads(r.read())
            return entries

    def close(self) -> None:
        from clickhouse_server import stop

        stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    main()
