"""``timber tail``: reads the files ``timber collect`` writes and prints their
frames for a person, or as the stored JSON lines.

Files are read a chunk at a time, never whole, and frames of several sources
are merged in time order as they stream, so memory stays small whatever the
size of the files. ``--follow`` looks at the files every
:data:`FOLLOW_INTERVAL` seconds with one ``stat`` each (the directory is
listed again only when it changed), so thousands of quiet files cost little.
A file that shrinks was truncated and is read again from its start; a path
that names another file was rotated: what remains of the old file is read to
its end, then the new one from its start.

Stored text is untrusted: control characters (C0, DEL, C1) are always shown
escaped in the human format, so a frame cannot move the cursor or retitle a
terminal. ``--json`` prints the stored lines byte for byte when the output is
not a terminal; on a terminal those characters are written as ``\\u00XX``,
which keeps each line the same JSON value.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

#: Seconds between two looks at the files under ``--follow``.
FOLLOW_INTERVAL = 0.5

#: Bytes read from a file at a time.
CHUNK = 64 * 1024

#: Files kept open between reads; others are reopened by path when they grow.
MAX_OPEN = 128

#: Rank of each level name for ``--level``; names not listed are always shown.
LEVELS = {
    "trace": 5,
    "debug": 10,
    "info": 20,
    "notice": 25,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "critical": 50,
    "fatal": 50,
}

_COLOURS = {
    "trace": "\x1b[2m",
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "notice": "\x1b[36m",
    "warn": "\x1b[33m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
    "fatal": "\x1b[1;31m",
}
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"

_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Control characters as Python writes them in a string literal.
_ESCAPE_TEXT = {c: _SHORT.get(chr(c), f"\\x{c:02x}") for c in _CONTROLS}
#: Control characters as JSON escapes, valid inside a JSON string.
_ESCAPE_JSON = {c: f"\\u{c:04x}" for c in _CONTROLS}


def escape(text: str) -> str:
    """``text`` with every control character made visible."""
    return text.translate(_ESCAPE_TEXT)


class _Cursor:
    """Where reading one file has got to."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        #: The path as text: stat on a str skips pathlib's conversion, which
        #: counts when thousands of files are looked at twice a second.
        self.name = os.fspath(path)
        self.source = source
        self.file: BinaryIO | None = None
        #: (device, inode) of the file being read, once opened.
        self.identity: tuple[int, int] | None = None
        self.offset = 0
        self.partial = bytearray()
        self.used = 0.0

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _open(self) -> bool:
        """Opens the file now at the path; False if there is none."""
        try:
            file = self.path.open("rb")
        except OSError:
            return False
        st = os.fstat(file.fileno())
        identity = (st.st_dev, st.st_ino)
        if identity != self.identity:
            # Another file than the one read so far (replaced while closed).
            self.identity, self.offset, self.partial = identity, 0, bytearray()
        self.file = file
        return True

    def has_news(self) -> bool:
        """Whether the path has more bytes, fewer (truncated) or another file
        (rotated) since the last read: one ``stat``."""
        try:
            st = os.stat(self.name)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self.identity or st.st_size != self.offset

    def lines(self, files: _Files) -> Iterator[bytes]:
        """The complete lines added since the last read, a chunk at a time."""
        self.used = time.monotonic()
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) != self.identity and self.file is not None:
            # Rotated: the old file may have grown since the last look.
            yield from self._drain(files, keep_open=True)
            if self.partial.strip():
                yield bytes(self.partial)
            self.close()
        elif st is not None and st.st_size < self.offset:
            self.offset, self.partial = 0, bytearray()  # truncated
        if self.file is None and not self._open():
            return
        yield from self._drain(files, keep_open=False)

    def _drain(self, files: _Files, keep_open: bool) -> Iterator[bytes]:
        while self.file is not None or self._open():
            assert self.file is not None
            self.file.seek(self.offset)
            data = self.file.read(CHUNK)
            if not data:
                return
            self.offset += len(data)
            if b"\n" not in data:
                self.partial += data
                continue
            head, _, rest = data.rpartition(b"\n")
            block = bytes(self.partial) + head
            self.partial = bytearray(rest)
            if not keep_open and files.open_count() > MAX_OPEN:
                self.close()  # reopened by path for the next chunk
            yield from (line for line in block.split(b"\n") if line.strip())


_DT = re.compile(rb'"dt"\s*:\s*"([^"]*)"')


def _time_key(item: tuple[str, bytes]) -> bytes:
    match = _DT.search(item[1])
    return match.group(1) if match else b""


class _Files:
    """The stored files under a path, read incrementally."""

    def __init__(self, path: Path, source: str | None) -> None:
        self.path = path
        self.source = source
        self.cursors: dict[str, _Cursor] = {}
        self._listed: tuple[int, list[Path]] | None = None

    def paths(self) -> list[Path]:
        if self.path.is_dir():
            if self.source is not None:
                return [self.path / f"{self.source}.ndjson"]
            # Listing thousands of files each time would cost more than the
            # stats: list again only when the directory changed.
            mtime = os.stat(self.path).st_mtime_ns
            if self._listed is None or self._listed[0] != mtime:
                self._listed = (mtime, sorted(self.path.glob("*.ndjson")))
            return self._listed[1]
        if self.source is not None and self.path.stem != self.source:
            return []
        return [self.path]

    def open_count(self) -> int:
        return sum(1 for c in self.cursors.values() if c.file is not None)

    def read(self) -> Iterator[tuple[str, bytes]]:
        """New ``(source, line)`` pairs, across files in time order."""
        active = []
        for path in self.paths():
            cursor = self.cursors.get(key := os.fspath(path))
            if cursor is None:
                cursor = self.cursors[key] = _Cursor(path, path.stem)
            if cursor.has_news():
                active.append(cursor)
        streams = [self._tagged(c) for c in active]
        if len(streams) == 1:
            yield from streams[0]
        elif streams:
            yield from heapq.merge(*streams, key=_time_key)
        self._close_least_recent()

    def _tagged(self, cursor: _Cursor) -> Iterator[tuple[str, bytes]]:
        for line in cursor.lines(self):
            yield cursor.source, line

    def _close_least_recent(self) -> None:
        open_ = [c for c in self.cursors.values() if c.file is not None]
        if len(open_) > MAX_OPEN:
            open_.sort(key=lambda c: c.used)
            for cursor in open_[: len(open_) - MAX_OPEN]:
                cursor.close()

    def close(self) -> None:
        for cursor in self.cursors.values():
            cursor.close()


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _short_time(dt: Any) -> str:
    if not isinstance(dt, str):
        return "-" if dt is None else str(dt)
    # 2019-03-04T03:44:21.221232Z -> 2019-03-04 03:44:21.221
    match = re.match(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d{1,3})?\d*Z$", dt)
    return f"{match.group(1)} {match.group(2)}{match.group(3) or ''}" if match else dt


def _parse(line: str) -> dict[str, Any] | None:
    try:
        frame: Any = json.loads(line)
    except (ValueError, RecursionError):
        # Not JSON, or nested deeper than Python parses: shown as text.
        return None
    return frame if isinstance(frame, dict) else None


class _Printer:
    """Renders frames for a person, filters them, and writes them out."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.out = out
        self.raw = bool(args.json)
        self.grep: str | None = args.grep
        self.min_rank = LEVELS[args.level] if args.level else None
        self.tty = out.isatty()
        self.colour = self.tty and not os.environ.get("NO_COLOR")

    def show(self, items: Iterable[tuple[str, bytes]], many_sources: bool) -> None:
        for source, raw in items:
            line = raw.decode("utf-8", "replace")
            frame = _parse(line)
            if not self._level_ok(frame):
                continue
            label = source if many_sources else None
            plain = self.render(frame, line, label, colour=False)
            if self.grep is not None and self.grep not in plain:
                continue
            if self.raw:
                self._write_json(raw, line)
            else:
                text = self.render(frame, line, label, colour=True) if self.colour else plain
                self.out.write(text + "\n")
        self.out.flush()

    def _write_json(self, raw: bytes, line: str) -> None:
        if self.tty:
            self.out.write(line.translate(_ESCAPE_JSON) + "\n")
            return
        buffer = getattr(self.out, "buffer", None)
        if buffer is None:
            self.out.write(line + "\n")
        else:
            self.out.flush()
            buffer.write(raw + b"\n")

    def _level_ok(self, frame: dict[str, Any] | None) -> bool:
        if self.min_rank is None or frame is None:
            return True
        level = frame.get("level")
        rank = LEVELS.get(level.lower()) if isinstance(level, str) else None
        return rank is None or rank >= self.min_rank

    def render(
        self, frame: dict[str, Any] | None, line: str, source: str | None, colour: bool
    ) -> str:
        if frame is not None:
            try:
                return self._render(frame, source, colour)
            except RecursionError:
                pass  # too deep to re-encode: shown as stored
        prefix = f"[{escape(source)}]  " if source is not None else ""
        return prefix + escape(line)

    def _render(self, frame: dict[str, Any], source: str | None, colour: bool) -> str:
        context = frame.get("context")
        context = context if isinstance(context, dict) else {}
        runtime = context.get("runtime")
        logger = runtime.get("logger_name") if isinstance(runtime, dict) else None
        message = frame.get("message")
        extras = [
            (k, v)
            for k, v in frame.items()
            if k not in ("dt", "level", "severity", "message", "context")
        ]
        extras += [(k, v) for k, v in context.items() if k not in ("runtime", "system")]
        return format_line(
            _short_time(frame.get("dt")),
            str(frame.get("level", "-")),
            str(logger) if logger else None,
            message if isinstance(message, str) else _compact(message),
            [(k, _compact(v)) for k, v in extras],
            source,
            colour,
        )


def format_line(
    time: str,
    level: str,
    logger: str | None,
    message: str,
    fields: Iterable[tuple[str, str]],
    source: str | None = None,
    colour: bool = False,
) -> str:
    """One line for a person: ``[source]  time  LEVEL  logger  message  k=v ...``,
    every part escaped here (``timber query`` prints its rows the same way)."""
    dim, reset = (_DIM, _RESET) if colour else ("", "")
    parts: list[str] = []
    if source is not None:
        parts.append(f"{dim}[{escape(source)}]{reset}")
    parts.append(escape(time))
    label = f"{escape(level.upper()):<5}"
    if colour:
        label = f"{_COLOURS.get(level.lower(), '')}{label}{_RESET}"
    parts.append(label)
    if logger:
        parts.append(f"{dim}{escape(logger)}{reset}")
    parts.append(escape(message))
    parts.extend(f"{dim}{escape(k)}={reset}{escape(v)}" for k, v in fields)
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Runs ``timber tail`` with parsed arguments; returns the exit status."""
    path = Path(args.path)
    if not path.exists() and not args.follow:
        print(f"timber tail: no such file or directory: {path}", file=sys.stderr)
        return 1
    files = _Files(path, args.source)
    printer = _Printer(args, sys.stdout)
    try:
        printer.show(files.read(), len(files.paths()) > 1)
        while args.follow:
            time.sleep(FOLLOW_INTERVAL)
            printer.show(files.read(), len(files.paths()) > 1)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return reader_gone()
    finally:
        files.close()
    return 0


def reader_gone() -> int:
    """After a broken pipe (`timber tail | head`): stdout goes nowhere from
    now on, so that exiting prints no second error; the exit status."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1
