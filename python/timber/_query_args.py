"""``timber query``'s arguments: the ``--clickhouse`` URL (its userinfo taken
as credentials and never shown), the table name, the user and password as
header text, and the times of ``--since``/``--until``; each refusal is a
``QueryError`` of one line."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone


class QueryError(Exception):
    """A mistake in the arguments or a refusal by the server: one line for the user."""


def shown_url(text: str) -> str:
    """``text`` for a message: a ``user:password@`` given in it replaced by its
    length, as the handler shows a URL."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    else:
        scheme += sep
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at:
        return text
    return f"{scheme}[userinfo of {len(userinfo)} characters, not shown]@{host}{rest[end:]}"


@dataclass(frozen=True)
class Server:
    """``--clickhouse`` read: the URL without its userinfo, and the user and
    password the userinfo held (percent-decoded), if any."""

    url: str
    user: str | None = None
    password: str | None = None


def base_url(text: str) -> Server:
    """``--clickhouse``: an ``http(s)://`` URL without a query or fragment; a
    ``user:password@`` in it is taken as the credentials and never shown."""
    text = text.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.query
        or parts.fragment
        or "?" in text
        or "#" in text
        or any(c.isspace() or not c.isprintable() for c in text)
    ):
        raise QueryError(
            "--clickhouse must be a URL such as http://localhost:8123 (no query or fragment), "
            f"not {shown_url(text)!r}"
        )
    host = parts.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")
    user = None if parts.username is None else urllib.parse.unquote(parts.username)
    password = None if parts.password is None else urllib.parse.unquote(parts.password)
    return Server(url, user, password)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def table_name(text: str) -> str:
    """``--table``: ``table`` or ``database.table`` of letters, digits and ``_``,
    as the handler accepts its ``table``: so the name goes into SQL as it is."""
    name = text.strip()
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        raise QueryError(
            f"--table must be a table name or database.table, of letters, digits and _, "
            f"not {text!r}"
        )
    return name


def header_value(option: str, text: str) -> str:
    """A user or password, which travels in an HTTP header as its UTF-8
    bytes, as the handler sends it."""
    if any(not c.isprintable() for c in text):
        raise QueryError(f"{option} must not contain control characters")
    # http.client writes a header's text as Latin-1: these are the UTF-8 bytes.
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)"
    r"(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d\d(?::?\d\d)?)?",
    re.IGNORECASE,
)


def parse_time(text: str, now_ns: int) -> int:
    """``--since``/``--until`` as nanoseconds since the epoch: an ISO time
    (``2026-11-24T10:00:00``, ``2026-11-24 10:00:00.5+01:00``; UTC without a
    zone) or a duration before ``now_ns`` (``30s``, ``10m``, ``2h``, ``1d``, ``1w``)."""
    text = text.strip()
    if match := _DURATION.fullmatch(text):
        amount, unit = match.groups()
        try:
            before = round(float(amount) * _UNIT_SECONDS[unit] * 1e9)
        except OverflowError:
            raise ValueError("out of range (years 1 to 9999, in UTC)") from None
        return in_range(now_ns - before)
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError("expected a time such as 2026-11-24T10:00:00 or a duration such as 10m")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    offset = timedelta(0)
    if zone and zone.upper() != "Z":
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        offset = -offset if zone[0] == "-" else offset
    try:
        at = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=timezone(offset),
        )
    except ValueError as e:
        raise ValueError(f"not a valid time: {e}") from None
    seconds = (at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(seconds=1)
    return in_range(seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0")))


def in_range(nanos: int) -> int:
    """``nanos`` if it is a time ``utc_text`` can write (years 1 to 9999, UTC)."""
    try:
        utc_text(nanos)
    except (OverflowError, ValueError):
        raise ValueError("out of range (years 1 to 9999, in UTC)") from None
    return nanos


def utc_text(nanos: int) -> str:
    """``YYYY-MM-DD hh:mm:ss.nnnnnnnnn`` in UTC: how the handler writes
    ``Timestamp``, and ``DateTime64(9)``'s own text form."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    at = datetime(1970, 1, 1) + timedelta(seconds=seconds)
    return f"{at:%Y-%m-%d %H:%M:%S}.{fraction:09d}"


def literal(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0")
    return f"'{escaped}'"
