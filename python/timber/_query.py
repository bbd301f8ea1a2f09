"""``timber query``: reads back the rows ``destination='clickhouse'`` wrote, over
ClickHouse's HTTP interface, and prints them for a person in the shape of
``timber tail``, or as JSON.

The table's layout is asked of the server first (``DESCRIBE TABLE``): the
``otel_logs`` of a current server (``Timestamp DateTime64(9)``, the attributes
as ``Map`` columns) or the one the handler creates on a server before 22.3
(``Timestamp`` as its UTC text, the maps as ``Nested`` ``.key``/``.value``
arrays). The same query serves both: filters on ``ServiceName``,
``SeverityNumber`` and ``Timestamp`` run on the server, the newest rows first,
and the printed lines are put back in time order here. A server as old as
18.16 takes no query parameters, so values go into the SQL as escaped string
literals, and the table name only after the handler's own check of it.

``--grep`` is tested here, on the printed line as ``timber tail`` tests it: the
rows are then read newest first until ``--limit`` of them match, and the
answer is closed there, which cancels the rest of the query on the server.

Rows are shown with their ``Timestamp`` in UTC; as JSON, a ``Nested`` map is
given as one object like a ``Map`` (``"LogAttributes": {"order.id": "7"}``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TextIO

from timber._query_args import (
    QueryError,
    base_url,
    header_value,
    literal,
    parse_time,
    table_name,
    utc_text,
)
from timber._tail import _ESCAPE_JSON, escape, format_line, reader_gone

#: Seconds to wait for the server to connect or to send more of its answer.
TIMEOUT = 30.0

#: Default ``--timeout``: seconds the whole command may wait for the server.
DEADLINE = 120.0

#: The longest answer line held (one row as JSON; the handler's rows are far
#: smaller): anything longer is refused rather than read into memory.
MAX_LINE = 32 << 20

#: Bytes read from the answer at a time.
_CHUNK = 64 << 10

#: Lowest OpenTelemetry ``SeverityNumber`` of each ``--level`` name (the
#: names of ``timber tail``); ``notice`` is OpenTelemetry's INFO2.
SEVERITY = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "critical": 21,
    "fatal": 21,
}

#: ``SeverityText`` for a row that has only a number.
_SEVERITY_NAMES = ((21, "FATAL"), (17, "ERROR"), (13, "WARN"), (9, "INFO"), (5, "DEBUG"))

#: Attributes the handler adds about where the record was made: what
#: ``timber tail`` leaves out as ``context.runtime``.
RUNTIME_KEYS = frozenset(
    {"code.file.path", "code.function.name", "code.line.number", "thread.id", "thread.name"}
)

#: ClickHouse error codes of a wrong user or password.
_AUTH = frozenset({192, 193, 194, 497, 516})

#: A column added to the rows of a ``DateTime64`` table, read and removed here.
_NANOS = "timber_query_ns"


# --- the query -------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What the rows are chosen by."""

    service: str | None = None
    min_severity: int | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    limit: int | None = None


def _base_type(kind: str) -> str:
    for wrapper in ("Nullable(", "LowCardinality("):
        while kind.startswith(wrapper) and kind.endswith(")"):
            kind = kind[len(wrapper) : -1]
    return kind


def build_sql(table: str, columns: dict[str, str], f: Filters) -> str:
    """The ``SELECT`` of the rows, newest first, for a table with these
    ``columns`` (name to ClickHouse type, as ``DESCRIBE TABLE`` gives them)."""
    if "Timestamp" not in columns:
        raise QueryError(f"table {table} has no Timestamp column: is it an otel_logs table?")
    textual = _base_type(columns["Timestamp"]).startswith(("String", "FixedString"))

    def at(nanos: int) -> str:
        # Fixed-width UTC text sorts as the times do; a DateTime64 is compared as one.
        text = literal(utc_text(nanos))
        return text if textual else f"toDateTime64({text}, 9, 'UTC')"

    where = []
    if f.service is not None:
        where.append(f"ServiceName = {literal(f.service)}")
    if f.min_severity is not None:
        where.append(f"SeverityNumber >= {int(f.min_severity)}")
    if f.since_ns is not None:
        where.append(f"Timestamp >= {at(f.since_ns)}")
    if f.until_ns is not None:
        where.append(f"Timestamp < {at(f.until_ns)}")
    for name, needed_by in (("ServiceName", f.service), ("SeverityNumber", f.min_severity)):
        if needed_by is not None and name not in columns:
            raise QueryError(f"table {table} has no {name} column to filter on")
    # A DateTime64 is written in the server's time zone: its nanoseconds come
    # along, and the text is made here, in UTC.
    select = "*" if textual else f"*, toUnixTimestamp64Nano(toDateTime64(Timestamp, 9)) AS {_NANOS}"
    sql = f"SELECT {select} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY Timestamp DESC"
    if f.limit is not None:
        sql += f" LIMIT {int(f.limit)}"
    return sql + " FORMAT JSONEachRow"


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """A row as read, with ``Timestamp`` as UTC text and every ``Nested``
    map (``X.key`` and ``X.value`` arrays) as one object ``X``, in place of
    its keys."""
    nanos = row.pop(_NANOS, None)
    if nanos is not None:
        row["Timestamp"] = utc_text(int(nanos))
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name.endswith(".key"):
            base = name[: -len(".key")]
            values = row.get(base + ".value")
            if isinstance(value, list) and isinstance(values, list) and len(value) == len(values):
                out[base] = dict(zip(value, values, strict=True))
                continue
        elif name.endswith(".value"):
            keys = row.get(name[: -len(".value")] + ".key")
            if isinstance(keys, list) and isinstance(value, list) and len(keys) == len(value):
                continue
        out[name] = value
    return out


# --- the server ------------------------------------------------------------


class ClickHouse:
    """ClickHouse's HTTP interface at ``url``: SQL in, the answer's lines out,
    everything within ``deadline`` seconds of this object's making."""

    def __init__(
        self, url: str, user: str | None, password: str | None, deadline: float = DEADLINE
    ) -> None:
        self.url = url
        self.deadline = deadline
        self._ends = time.monotonic() + deadline
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if user:
            self.headers["X-ClickHouse-User"] = user
        if password:
            self.headers["X-ClickHouse-Key"] = password

    def lines(self, sql: str) -> Generator[str, None, None]:
        """The answer to ``sql``, a line at a time; closing the iterator closes
        the connection (and so cancels the query on the server). A line longer
        than ``MAX_LINE`` bytes is refused rather than held."""
        parts = urllib.parse.urlsplit(self.url)
        https = parts.scheme.lower() == "https"
        left = self._ends - time.monotonic()
        if left <= 0:
            raise self._late()
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = kind(parts.hostname or "", parts.port, timeout=min(TIMEOUT, left))
        # A server sending a byte now and then never trips the per-read
        # timeout: at the deadline the socket is shut, whatever it is doing.
        expired = threading.Event()
        watchdog = threading.Timer(left, _shut, (conn, expired))
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                conn.request("POST", parts.path + "/", body=sql.encode(), headers=self.headers)
                response = conn.getresponse()
                if response.status >= 300:
                    body = response.read(64 * 1024).decode("utf-8", "replace")
                    raise self._refused(
                        response.status, response.getheader("X-ClickHouse-Exception-Code"), body
                    )
                yield from self._split(response, expired)
            except (OSError, http.client.HTTPException) as e:
                late = expired.is_set() or time.monotonic() >= self._ends
                raise (self._late() if late else self._unreachable(e)) from None
            if expired.is_set():
                raise self._late()
        finally:
            watchdog.cancel()
            conn.close()

    def _split(
        self, response: http.client.HTTPResponse, expired: threading.Event
    ) -> Generator[str, None, None]:
        pending = bytearray()
        while chunk := response.read1(_CHUNK):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                raw = bytes(pending) + chunk[start:end] if pending else chunk[start:end]
                pending.clear()
                start = end + 1
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if line.startswith("Code: "):
                    # An error after the answer began: old servers append it.
                    raise self._refused(200, None, line)
                if line:
                    yield line
            pending += chunk[start:]
            if len(pending) > MAX_LINE:
                raise QueryError(
                    f"{self.url} answered a line longer than {MAX_LINE >> 20} MiB: "
                    "not ClickHouse rows"
                )
        if expired.is_set():
            # The socket was shut at the deadline: what came is not all.
            raise self._late()
        if pending.strip():
            yield pending.decode("utf-8", "replace")

    def _late(self) -> QueryError:
        return QueryError(f"ClickHouse at {self.url} did not answer within {self.deadline:g} s")

    def _unreachable(self, e: BaseException) -> QueryError:
        if isinstance(e, (TimeoutError, socket.timeout)):
            return QueryError(f"ClickHouse at {self.url} did not answer within {TIMEOUT:g} s")
        if isinstance(e, OSError) and e.strerror:
            why = e.strerror
        else:
            why = str(e) or type(e).__name__
        return QueryError(f"cannot reach ClickHouse at {self.url}: {why}")

    def _refused(self, status: int, code_header: str | None, body: str) -> QueryError:
        first = next((line.strip() for line in body.splitlines() if line.strip()), "")
        # The server's words, made safe for a terminal.
        first = escape(first[:500])
        code = _code(code_header, first)
        if code in _AUTH:
            return QueryError(
                f"ClickHouse refused the credentials: {first} (check --user and --password, "
                "or TIMBER_CLICKHOUSE_USER and TIMBER_CLICKHOUSE_PASSWORD)"
            )
        if code is not None:
            return QueryError(f"ClickHouse: {first}")
        return QueryError(f"HTTP {status} from {self.url}" + (f": {first}" if first else ""))


def _shut(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    """Ends whatever ``conn`` is waiting for (the deadline passed)."""
    expired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _code(header: str | None, first_line: str) -> int | None:
    """ClickHouse's error code: the header of current servers, else the body's
    ``Code: N.`` (``Code: N,`` before 19.x)."""
    if header and header.strip().isdigit():
        return int(header.strip())
    match = re.match(r"Code:\s*(\d+)", first_line)
    return int(match.group(1)) if match else None


def _object(server: ClickHouse, line: str) -> dict[str, Any]:
    """One line of a ``JSONEachRow`` answer (a proxy in front may answer otherwise)."""
    try:
        value: Any = json.loads(line)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise QueryError(
            f"{server.url} answered something other than ClickHouse rows: {escape(line[:200])}"
        )
    return value


def describe(server: ClickHouse, table: str) -> dict[str, str]:
    """The table's columns and their types, in order."""
    columns: dict[str, str] = {}
    for line in server.lines(f"DESCRIBE TABLE {table} FORMAT JSONEachRow"):
        column = _object(server, line)
        columns[str(column.get("name"))] = str(column.get("type"))
    return columns


# --- printing --------------------------------------------------------------


def _short_time(text: Any) -> str:
    # 2026-11-24 10:00:00.123456789Z -> 2026-11-24 10:00:00.123, as tail shows time.
    if not isinstance(text, str):
        return "-" if text is None else str(text)
    match = re.match(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d{1,3})?\d*Z?$", text)
    return f"{match.group(1)} {match.group(2)}{match.group(3) or ''}" if match else text


def _level(row: dict[str, Any]) -> str:
    text = row.get("SeverityText")
    if isinstance(text, str) and text:
        return text
    number = row.get("SeverityNumber")
    if isinstance(number, int):
        return next((name for low, name in _SEVERITY_NAMES if number >= low), "-")
    return "-"


def _attribute(text: Any) -> str:
    """An attribute's value as ``timber tail`` shows a field: JSON. The handler
    stored non-strings as their JSON text, which is shown as it is; any other
    text is a string, shown quoted."""
    if not isinstance(text, str):
        return _compact(text)
    if text and text == text.strip():
        try:
            if not isinstance(json.loads(text), str):
                return text
        except (ValueError, RecursionError):
            pass
    return _compact(text)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def render(row: dict[str, Any], source: str | None = None, colour: bool = False) -> str:
    """One (normalised) row as ``timber tail`` prints a frame: time, level,
    logger (``ScopeName``), message (``Body``), then ``LogAttributes`` but
    for those about the code and thread, as ``key=value``."""
    attributes = row.get("LogAttributes")
    fields = (
        [(str(k), _attribute(v)) for k, v in attributes.items() if k not in RUNTIME_KEYS]
        if isinstance(attributes, dict)
        else []
    )
    body = row.get("Body")
    scope = row.get("ScopeName")
    return format_line(
        _short_time(row.get("Timestamp")),
        _level(row),
        str(scope) if scope else None,
        body if isinstance(body, str) else _compact(body),
        fields,
        source,
        colour,
    )


def select(server: ClickHouse, sql: str, grep: str | None, limit: int) -> list[dict[str, Any]]:
    """The rows ``sql`` answers, newest first, up to ``limit`` whose line
    contains ``grep``."""
    rows: list[dict[str, Any]] = []
    lines = server.lines(sql)
    try:
        for line in lines:
            row = normalise(_object(server, line))
            if grep is None or grep in render(row):
                rows.append(row)
                if len(rows) >= limit:
                    break
    finally:
        lines.close()
    return rows


def write(rows: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    """Prints the rows, given newest first, oldest first."""
    rows = rows[::-1]
    if as_json:
        for row in rows:
            # DEL and C1 stay escapes too, so the line is safe on a terminal.
            out.write(_compact(row).translate(_ESCAPE_JSON) + "\n")
        return
    colour = out.isatty() and not os.environ.get("NO_COLOR")
    services = {row.get("ServiceName") for row in rows}
    for row in rows:
        label = str(row.get("ServiceName", "")) if len(services) > 1 else None
        out.write(render(row, label, colour) + "\n")


def run(args: argparse.Namespace) -> int:
    """Runs ``timber query`` with parsed arguments; returns the exit status."""
    try:
        now_ns = time.time_ns()
        times = {}
        for option in ("since", "until"):
            text = getattr(args, option)
            try:
                times[option] = None if text is None else parse_time(text, now_ns)
            except ValueError as e:
                raise QueryError(f"--{option} {text!r}: {e}") from None
        given = base_url(args.clickhouse)
        # The flags, then the URL's userinfo, then the handler's variables.
        user = next(
            (u for u in (args.user, given.user) if u is not None),
            os.environ.get("TIMBER_CLICKHOUSE_USER"),
        )
        password = next(
            (p for p in (args.password, given.password) if p is not None),
            os.environ.get("TIMBER_CLICKHOUSE_PASSWORD"),
        )
        server = ClickHouse(
            given.url,
            None if user is None else header_value("--user", user),
            None if password is None else header_value("--password", password),
            deadline=args.timeout,
        )
        table = table_name(args.table)
        filters = Filters(
            service=args.service,
            min_severity=SEVERITY[args.level] if args.level else None,
            since_ns=times["since"],
            until_ns=times["until"],
            # With --grep the lines are tested here: read until enough match.
            limit=args.limit if args.grep is None else None,
        )
        sql = build_sql(table, describe(server, table), filters)
        rows = select(server, sql, args.grep, args.limit)
        write(rows, args.json, sys.stdout)
        sys.stdout.flush()
    except QueryError as e:
        print(f"timber query: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return reader_gone()
    return 0
