"""The bundled collector (`timber collect`) as a real server on 127.0.0.1, and
`timber tail` reading what it stored."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import Collector, read_frames

Start = Callable[..., Collector]


def frame(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "dt": f"2019-03-04T03:44:{i % 60:02d}.221232Z",
        "level": "info",
        "message": f'event {i} é "quoted"\nsecond line',
        "n": i,
        "ratio": i / 4,
        "nested": {"list": [1, None, True, "x"], "empty": {}},
        "context": {"runtime": {"logger_name": "app"}, "system": {"pid": 1}},
        **extra,
    }


def batch(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [frame(i) for i in range(start, start + n)]


def ndjson(frames: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(f) + "\n" for f in frames).encode()


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_BLOCK = 128 * 1024


def zstd_frame(data: bytes) -> bytes:
    """A valid Zstandard frame holding `data` in raw blocks (the standard
    library has no zstd encoder before Python 3.14)."""
    # Frame header: 4-byte content size, single segment, no checksum.
    out = bytearray(ZSTD_MAGIC + b"\xa0" + len(data).to_bytes(4, "little"))
    blocks = [data[i : i + ZSTD_BLOCK] for i in range(0, len(data), ZSTD_BLOCK)] or [b""]
    for n, block in enumerate(blocks):
        last = n == len(blocks) - 1
        out += ((len(block) << 3) | int(last)).to_bytes(3, "little") + block
    return bytes(out)


def zstd_rle_bomb(size: int) -> bytes:
    """A Zstandard frame of `size` zero bytes in 4-byte RLE blocks, with no
    declared content size (1 MiB window)."""
    out = bytearray(ZSTD_MAGIC + b"\x00\x50")
    count = size // ZSTD_BLOCK
    for n in range(count):
        header = (ZSTD_BLOCK << 3) | (1 << 1) | int(n == count - 1)
        out += header.to_bytes(3, "little") + b"\x00"
    return bytes(out)


def gzip_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + packer.flush()


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


FRAMES_PATH = "/sources/app_1/frames"


# --- content types and encodings ---------------------------------------------


@pytest.mark.parametrize("content_type", ["application/msgpack", "application/x-msgpack"])
def test_msgpack_array_and_single_frame(collector: Collector, content_type: str) -> None:
    frames = batch(3)
    status, body = collector.post(FRAMES_PATH, msgpack.packb(frames), content_type)
    assert (status, json.loads(body)) == (202, {"accepted": 3})
    status, _ = collector.post(FRAMES_PATH, msgpack.packb(frame(9)), content_type)
    assert status == 202
    assert collector.frames("app_1") == [*frames, frame(9)]


def test_json_object_and_array(collector: Collector) -> None:
    frames = batch(3)
    status, _ = collector.post(
        FRAMES_PATH, json.dumps(frames, indent=2).encode(), "application/json"
    )
    assert status == 202
    one = json.dumps(frame(7)).encode()
    assert collector.post(FRAMES_PATH, one, "application/json; charset=utf-8") == (
        202,
        b'{"accepted":1}\n',
    )
    assert collector.frames("app_1") == [*frames, frame(7)]
    # Stored compactly, one line per frame, keys in the order sent.
    first = (collector.out / "app_1.ndjson").read_text().splitlines()[0]
    assert first == json.dumps(frames[0], separators=(",", ":"))


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/ndjson"])
def test_ndjson(collector: Collector, content_type: str) -> None:
    frames = batch(4)
    body = ndjson(frames[:2]) + b"\r\n\n" + ndjson(frames[2:])
    assert collector.post(FRAMES_PATH, body, content_type) == (202, b'{"accepted":4}\n')
    assert collector.frames("app_1") == frames


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "deflate-raw": raw_deflate,
    "zstd": zstd_frame,
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(
    "kind", ["application/msgpack", "application/json", "application/x-ndjson"]
)
def test_content_encodings(collector: Collector, encoding: str, kind: str) -> None:
    frames = batch(600)
    plain = {
        "application/msgpack": msgpack.packb(frames),
        "application/json": json.dumps(frames).encode(),
        "application/x-ndjson": ndjson(frames),
    }[kind]
    header = encoding.split("-")[0]
    status, _ = collector.post(
        FRAMES_PATH, ENCODINGS[encoding](plain), kind, {"Content-Encoding": header}
    )
    assert status == 202
    assert collector.frames("app_1") == frames


def test_better_stack_form_stores_under_a_fixed_source(collector: Collector) -> None:
    auth = {"Authorization": "Bearer tok-1"}
    assert collector.post("/", ndjson(batch(2)), "application/x-ndjson", auth)[0] == 202
    assert collector.post("/", msgpack.packb(batch(1)))[0] == 202
    assert len(collector.frames("betterstack")) == 3
    assert sorted(p.name for p in collector.out.iterdir()) == ["betterstack.ndjson"]


def test_root_source_flag(start_collector: Start) -> None:
    c = start_collector("--quiet", "--root-source", "edge-1")
    assert c.post("/", msgpack.packb(batch(1)))[0] == 202
    assert c.frames("edge-1") == batch(1)


# --- refusals ------------------------------------------------------------------


def test_api_key(start_collector: Start) -> None:
    c = start_collector("--quiet", "--api-key", "s3cret")
    body = msgpack.packb(batch(2))
    assert c.post(FRAMES_PATH, body)[0] == 401
    assert c.post(FRAMES_PATH, body, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert c.post(FRAMES_PATH, body, headers={"Authorization": "Basic s3cret"})[0] == 401
    assert c.post("/", body)[0] == 401
    assert c.post(FRAMES_PATH, body, headers={"Authorization": "Bearer s3cret"})[0] == 202
    assert c.frames("app_1") == batch(2)
    assert not (c.out / "default.ndjson").exists()


def test_api_key_from_environment(start_collector: Start) -> None:
    c = start_collector("--quiet", env={"TIMBER_API_KEY": "from-env"})
    body = msgpack.packb(batch(1))
    assert c.post(FRAMES_PATH, body)[0] == 401
    assert c.post(FRAMES_PATH, body, headers={"Authorization": "Bearer from-env"})[0] == 202


def test_no_key_is_announced(start_collector: Start) -> None:
    c = start_collector()
    assert c.post(FRAMES_PATH, msgpack.packb(batch(1)))[0] == 202
    assert c.stop() == 0
    assert "no API key" in c.stderr()


def test_body_limit_counts_decompressed_bytes(start_collector: Start) -> None:
    c = start_collector("--quiet", "--max-body", "4KiB")
    small = ndjson(batch(2))
    big = ndjson(batch(40))
    assert len(small) < 4096 < len(big)
    assert c.post(FRAMES_PATH, small, "application/x-ndjson")[0] == 202
    status, reason = c.post(FRAMES_PATH, big, "application/x-ndjson")
    assert status == 413 and b"4096" in reason
    packed = gzip.compress(big)
    assert len(packed) < 4096
    assert (
        c.post(FRAMES_PATH, packed, "application/x-ndjson", {"Content-Encoding": "gzip"})[0] == 413
    )
    assert c.frames("app_1") == batch(2)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compression_bomb_is_refused(collector: Collector, encoding: str) -> None:
    size = 100 * 1024 * 1024
    bomb = gzip_zeros(size) if encoding == "gzip" else zstd_rle_bomb(size)
    assert len(bomb) < 1024 * 1024
    status, _ = collector.post(
        FRAMES_PATH, bomb, "application/msgpack", {"Content-Encoding": encoding}
    )
    assert status == 413
    assert collector.post(FRAMES_PATH, msgpack.packb(batch(2)))[0] == 202
    assert collector.frames("app_1") == batch(2)


GARBAGE: list[tuple[str, bytes, dict[str, str]]] = [
    ("application/msgpack", msgpack.packb(batch(5))[:-7], {}),
    ("application/msgpack", b"\xc1", {}),
    ("application/msgpack", msgpack.packb([1, 2, 3]), {}),
    ("application/msgpack", msgpack.packb("just a string"), {}),
    ("application/msgpack", msgpack.packb(batch(1)) + b"\x00", {}),
    ("application/msgpack", b"", {}),
    ("application/json", b'{"a": ', {}),
    ("application/json", b'[{"a": 1}, 2]', {}),
    ("application/json", b"42", {}),
    ("application/json", b"\xff\xfe{}", {}),
    ("application/x-ndjson", b'{"a": 1}\n{"b": \n', {}),
    ("application/x-ndjson", b'{"a": 1}\n[1, 2]\n', {}),
    ("application/msgpack", b"not gzip", {"Content-Encoding": "gzip"}),
    (
        "application/msgpack",
        gzip.compress(msgpack.packb(batch(50)))[:-30],
        {"Content-Encoding": "gzip"},
    ),
    ("application/msgpack", b"\x28\xb5\x2f\xfd garbage", {"Content-Encoding": "zstd"}),
]


def test_garbage_is_refused_and_the_server_keeps_working(collector: Collector) -> None:
    assert collector.post(FRAMES_PATH, msgpack.packb(batch(3)))[0] == 202
    for content_type, body, headers in GARBAGE:
        status, reason = collector.post(FRAMES_PATH, body, content_type, headers)
        assert status == 400, (content_type, body[:40])
        assert reason.endswith(b"\n") and reason.count(b"\n") == 1 and len(reason) > 1
    assert collector.post(FRAMES_PATH, msgpack.packb(batch(3, start=3)))[0] == 202
    assert collector.frames("app_1") == batch(6)


@pytest.mark.parametrize("source", ["a%2Fb", "..", "a%20b", "%C3%A9", "x" * 201])
def test_bad_source_ids_are_refused(collector: Collector, source: str) -> None:
    assert collector.post(f"/sources/{source}/frames", msgpack.packb(batch(1)))[0] == 400
    assert list(collector.out.iterdir()) == []


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("text/plain", {}),
        ("application/x-www-form-urlencoded", {}),
        ("application/msgpack", {"Content-Encoding": "br"}),
    ],
)
def test_unknown_type_or_encoding_is_415(
    collector: Collector, content_type: str, headers: dict[str, str]
) -> None:
    status, _ = collector.post(FRAMES_PATH, msgpack.packb(batch(1)), content_type, headers)
    assert status == 415


def test_missing_content_type_is_415(collector: Collector) -> None:
    assert collector.post(FRAMES_PATH, msgpack.packb(batch(1)), content_type=None)[0] == 415


def test_bad_settings_exit_with_a_message(tmp_path: Path) -> None:
    for args in (["--listen", "nonsense"], ["--out", str(tmp_path / "file/x")]):
        (tmp_path / "file").write_text("")
        run = subprocess.run(
            [sys.executable, "-m", "timber", "collect", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 1, run
        assert run.stderr.startswith("timber collect: ")
    # Mistakes on the command line: see test_collect_cli.py.
    run = subprocess.run(
        [sys.executable, "-m", "timber", "collect", "--max-body", "lots"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "not a size" in run.stderr


# --- concurrency and shutdown ----------------------------------------------------


def test_concurrent_writers_never_interleave(collector: Collector) -> None:
    threads, requests, per_request = 8, 15, 100
    errors: list[Any] = []

    def send(t: int) -> None:
        for r in range(requests):
            frames = [{"t": t, "r": r, "i": i, "pad": "x" * (t * 50)} for i in range(per_request)]
            source = f"s{t % 3}"
            status, _ = collector.post(f"/sources/{source}/frames", msgpack.packb(frames))
            if status != 202:
                errors.append(status)

    workers = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    total = 0
    for s in range(3):
        stored = collector.frames(f"s{s}")
        total += len(stored)
        # Each request's frames are stored together and in order.
        for start in range(0, len(stored), per_request):
            chunk = stored[start : start + per_request]
            assert {(f["t"], f["r"]) for f in chunk} == {(chunk[0]["t"], chunk[0]["r"])}
            assert [f["i"] for f in chunk] == list(range(per_request))
    assert total == threads * requests * per_request


def test_sigterm_finishes_requests_in_flight(start_collector: Start) -> None:
    c = start_collector("--quiet", "--fsync")
    accepted: set[int] = set()
    sent: set[int] = set()
    lock = threading.Lock()
    some_accepted = threading.Event()

    def send(t: int) -> None:
        for r in range(10_000):
            ids = [t * 1_000_000 + r * 1000 + i for i in range(200)]
            with lock:
                sent.update(ids)
            try:
                status, _ = c.post(FRAMES_PATH, msgpack.packb([{"id": i} for i in ids]))
            except OSError:
                return  # the collector stopped listening
            if status != 202:
                return
            with lock:
                accepted.update(ids)
                if len(accepted) >= 40 * 200:
                    some_accepted.set()

    workers = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    assert some_accepted.wait(30)
    assert c.stop(signal.SIGTERM) == 0
    for w in workers:
        w.join(30)
    stored = [f["id"] for f in c.frames("app_1")]
    assert len(stored) == len(set(stored))
    assert accepted <= set(stored) <= sent


def test_sigterm_waits_for_a_request_in_flight(start_collector: Start) -> None:
    c = start_collector("--quiet")
    body = msgpack.packb(batch(5))
    head = (
        f"POST {FRAMES_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/msgpack\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", c.port), timeout=30) as conn:
        conn.sendall(head.encode())
        # The server asks for the body once the handler is reading it.
        assert conn.recv(1024).startswith(b"HTTP/1.1 100")
        c.proc.send_signal(signal.SIGTERM)
        # Shutdown has begun once new connections are refused (or reset, for
        # one queued as the listener closed).
        for _ in range(3000):  # up to 30 s on a loaded machine
            try:
                socket.create_connection(("127.0.0.1", c.port), timeout=30).close()
            except (ConnectionRefusedError, ConnectionResetError):
                break
            time.sleep(0.01)
        else:
            pytest.fail("the collector kept accepting connections after SIGTERM")
        conn.sendall(body)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202")
    assert c.stop() == 0
    assert c.frames("app_1") == batch(5)


def test_sigint_exits_cleanly(start_collector: Start) -> None:
    c = start_collector("--quiet")
    assert c.post(FRAMES_PATH, msgpack.packb(batch(1)))[0] == 202
    assert c.stop(signal.SIGINT) == 0
    assert c.stderr() == ""


# --- timber tail ---------------------------------------------------------------


def tail(*args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "timber", "tail", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


TAIL_FRAMES = [
    {
        "dt": "2019-03-04T03:44:21.221232Z",
        "level": "info",
        "message": "Order placed",
        "order_placed": {"id": 1234},
        "context": {
            "runtime": {"logger_name": "shop.orders", "line": 3},
            "system": {"hostname": "h"},
            "user": {"id": 123},
        },
    },
    {
        "dt": "2019-03-04T03:44:22.000001Z",
        "level": "warn",
        "message": "Stock low",
        "context": {"runtime": {"logger_name": "shop.stock"}, "system": {}},
    },
    {
        "dt": "2019-03-04T03:44:23.5Z",
        "level": "debug",
        "message": "cache miss",
        "context": {"runtime": {"logger_name": "shop.cache"}},
    },
    {"dt": "2019-03-04T03:44:24Z", "level": "error", "message": "Payment failed", "code": 7},
    {"dt": "2019-03-04T03:44:25Z", "level": "audit", "message": "custom level"},
]


@pytest.fixture
def stored(collector: Collector) -> Path:
    assert collector.post(FRAMES_PATH, msgpack.packb(TAIL_FRAMES))[0] == 202
    return collector.out


def test_tail_prints_frames_for_a_person(stored: Path) -> None:
    lines = tail(str(stored)).splitlines()
    assert len(lines) == 5
    assert lines[0] == (
        '2019-03-04 03:44:21.221  INFO   shop.orders  Order placed  order_placed={"id":1234}'
        '  user={"id":123}'
    )
    assert lines[1] == "2019-03-04 03:44:22.000  WARN   shop.stock  Stock low"
    assert lines[3] == "2019-03-04 03:44:24  ERROR  Payment failed  code=7"
    assert "\x1b[" not in "".join(lines)
    assert tail(str(stored / "app_1.ndjson")).splitlines() == lines


def test_tail_json_prints_stored_lines(stored: Path) -> None:
    out = tail("--json", str(stored))
    assert out == (stored / "app_1.ndjson").read_text()


def test_tail_level_and_grep(stored: Path) -> None:
    warn = tail("--level", "warn", str(stored))
    shown = [
        m
        for m in ("Order placed", "Stock low", "cache miss", "Payment failed", "custom level")
        if m in warn
    ]
    assert shown == ["Stock low", "Payment failed", "custom level"]
    assert tail("--level", "WARNING", str(stored)) == warn
    assert tail("--grep", "shop.", str(stored)).count("\n") == 3
    assert (
        tail("--grep", "Payment", "--json", str(stored))
        == json.dumps(TAIL_FRAMES[3], separators=(",", ":")) + "\n"
    )
    assert tail("--source", "nope", str(stored)) == ""


def test_tail_merges_sources_in_time_order(collector: Collector) -> None:
    early = {"dt": "2019-03-04T03:44:21Z", "level": "info", "message": "first"}
    late = {"dt": "2019-03-04T03:44:22Z", "level": "info", "message": "second"}
    assert collector.post("/sources/b/frames", msgpack.packb(late))[0] == 202
    assert collector.post("/sources/a/frames", msgpack.packb(early))[0] == 202
    lines = tail(str(collector.out)).splitlines()
    assert [line.split("  ")[0] for line in lines] == ["[a]", "[b]"]
    assert tail("--source", "b", str(collector.out)).splitlines() == [
        "2019-03-04 03:44:22  INFO   second"
    ]


def test_tail_follow_prints_new_frames(collector: Collector) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "timber", "tail", "--follow", str(collector.out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for i in range(3):
            f = {"dt": f"2019-03-04T03:44:2{i}Z", "level": "info", "message": f"live {i}"}
            assert collector.post(f"/sources/s{i}/frames", msgpack.packb(f))[0] == 202
            assert proc.stdout.readline().rstrip("\n").endswith(f"live {i}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_tail_missing_path(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "timber", "tail", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1 and "no such file" in run.stderr


def test_read_frames_helper_sees_every_line(collector: Collector) -> None:
    assert collector.post(FRAMES_PATH, msgpack.packb(batch(2)))[0] == 202
    assert read_frames(collector.out, "app_1") == batch(2)


# --- nesting -----------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    """A frame whose deepest value sits at `depth` (the frame itself is 0)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize(
    ("content_type", "encode"),
    [
        ("application/msgpack", msgpack.packb),
        ("application/json", lambda f: json.dumps([f]).encode()),
        ("application/x-ndjson", lambda f: json.dumps(f).encode() + b"\n"),
    ],
)
def test_nesting_is_capped_alike_in_every_format(
    collector: Collector, content_type: str, encode: Callable[[Any], bytes]
) -> None:
    assert collector.post(FRAMES_PATH, encode(nested(128)), content_type)[0] == 202
    status, reason = collector.post(FRAMES_PATH, encode(nested(129)), content_type)
    assert status == 400 and b"deeper than 128" in reason, reason
    assert len(collector.frames("app_1")) == 1


def test_very_deep_json_is_refused_and_the_server_keeps_working(collector: Collector) -> None:
    deep = b'{"a":' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}"
    for content_type in ("application/json", "application/x-ndjson"):
        status, reason = collector.post(FRAMES_PATH, deep, content_type)
        assert status == 400 and b"deeper than 128" in reason
    assert collector.post(FRAMES_PATH, msgpack.packb(batch(1)))[0] == 202
    assert collector.frames("app_1") == batch(1)
