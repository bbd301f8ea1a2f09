"""The collector under pressure, as a real process on 127.0.0.1: descriptors,
slow and idle clients, memory, logrotate, secrets and replayed batches."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from conftest import Collector

Start = Callable[..., Collector]
FRAMES_PATH = "/sources/app/frames"


class LimitedCollector(Collector):
    """`timber collect` started with a lowered soft RLIMIT_NOFILE."""

    def __init__(self, out: Path, nofile: int, *args: str) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        super().__init__(
            out,
            *args,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard)),
        )


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def start(nofile: int, *args: str) -> Collector:
        c = LimitedCollector(tmp_path / f"limited{len(started)}", nofile, *args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def many_fds() -> None:
    """Room in this process for the client side of many connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    assert match is not None
    return int(match.group(1))


def post(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    all_headers = {"Content-Type": "application/msgpack", **(headers or {})}
    conn.request("POST", path, body, all_headers)
    response = conn.getresponse()
    return response.status, response.read(), dict(response.getheaders())


# --- 9: one open file per source ------------------------------------------------------


def test_more_sources_than_descriptors(limited: Callable[..., Collector]) -> None:
    """Under a 1,024-descriptor limit, 1,500 sources are all stored, without
    waits; the collector never holds more descriptors than it may."""
    c = limited(1024, "--quiet")
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30)
    slowest = 0.0
    for i in range(1500):
        started = time.monotonic()
        status, reason, _ = post(conn, f"/sources/s{i}/frames", msgpack.packb({"i": i}))
        slowest = max(slowest, time.monotonic() - started)
        assert status == 202, (i, reason)
    assert open_fds(c.proc.pid) < 1024
    # Early sources had their files closed; writing to them again reopens them.
    for i in range(0, 1500, 100):
        assert post(conn, f"/sources/s{i}/frames", msgpack.packb({"i": i, "again": True}))[0] == 202
    conn.close()
    # Not a speed check: it catches a request held back until a descriptor frees up.
    assert slowest < 2.5, f"a request waited {slowest:.2f} s"
    assert len(list(c.out.glob("*.ndjson"))) == 1500
    assert c.frames("s100") == [{"i": 100}, {"i": 100, "again": True}]
    assert c.frames("s1499") == [{"i": 1499}]


# --- 10: timeouts and the connection limit -------------------------------------------


def test_slow_and_idle_connections_are_closed(start_collector: Start, many_fds: None) -> None:
    c = start_collector("--quiet", "--read-timeout", "1s", "--idle-timeout", "2s")
    body = msgpack.packb({"m": 1})
    head = (
        f"POST {FRAMES_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    kinds: dict[str, list[socket.socket]] = {"idle": [], "head": [], "body": [], "trickle": []}
    # Each connection's clock starts when it was opened: on a loaded machine
    # one connect can wait for a SYN retransmit (1 s) while the earlier
    # connections' timers already run.
    opened: dict[socket.socket, float] = {}
    for kind, socks in kinds.items():
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
            if kind == "head":
                s.sendall(head[:-2])  # all but the blank line that ends the head
            elif kind == "body":
                s.sendall(head + body[:-1])
            opened[s] = time.monotonic()
            socks.append(s)
    started = time.monotonic()
    closed_after: dict[socket.socket, float] = {}
    answers: dict[socket.socket, bytes] = {}
    sel = selectors.DefaultSelector()
    for socks in kinds.values():
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
    trickled = 0
    while len(closed_after) < 200 and time.monotonic() - started < 15:
        # A trickler sends one byte of its head every 0.2 s: always some
        # progress, never a whole request.
        elapsed = time.monotonic() - started
        while trickled < len(head) - 2 and trickled * 0.2 <= elapsed:
            for s in kinds["trickle"]:
                if s not in closed_after:
                    try:
                        s.send(head[trickled : trickled + 1])
                    except OSError:
                        closed_after[s] = elapsed
            trickled += 1
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                answers[s] = answers.get(s, b"") + data
            else:
                closed_after[s] = time.monotonic() - started
                sel.unregister(s)
    for socks in kinds.values():
        for s in socks:
            s.close()
    assert len(closed_after) == 200, f"{200 - len(closed_after)} connections still open"
    # How long each connection lived; tricklers sent their first byte at `started`.
    for s in kinds["trickle"]:
        opened[s] = started
    lived = {s: started + after - opened[s] for s, after in closed_after.items()}
    idle = [lived[s] for s in kinds["idle"]]
    assert 1.5 < min(idle) and max(idle) < 6, idle
    for kind in ("head", "body", "trickle"):
        times = [lived[s] for s in kinds[kind]]
        assert 0.5 < min(times) and max(times) < 5, (kind, times)
    # The half-sent bodies were told why.
    assert all(answers.get(s, b"").startswith(b"HTTP/1.1 408") for s in kinds["body"])
    # And the collector still serves.
    assert c.post(FRAMES_PATH, body)[0] == 202


def test_idle_connections_do_not_lock_out_requests(
    limited: Callable[..., Collector], many_fds: None
) -> None:
    """1,100 connections that send nothing, under a 1,024-descriptor limit
    and the default idle timeout: a real request still gets through quickly."""
    c = limited(1024, "--quiet")
    idle = [socket.create_connection(("127.0.0.1", c.port), timeout=10) for _ in range(1100)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        status, _ = c.post(FRAMES_PATH, msgpack.packb({"m": 1}))
        waited = time.monotonic() - started
        assert status == 202
        assert waited < 5, f"the request waited {waited:.1f} s"
        assert open_fds(c.proc.pid) < 1024
    finally:
        for s in idle:
            s.close()
    assert c.frames("app") == [{"m": 1}]


# --- 11: memory -----------------------------------------------------------------------


def test_memory_is_bounded_under_concurrent_large_bodies(start_collector: Start) -> None:
    """64 concurrent bodies of 9.5 MiB: the collector's peak RSS stays near its
    budget (it reached about 1 GB without one)."""
    c = start_collector("--quiet", "--max-memory", "64MiB")
    frames = [{"i": i, "pad": "x" * 9_500} for i in range(1000)]
    body = msgpack.packb(frames)
    assert 9 << 20 < len(body) < 10 << 20
    results: list[tuple[int, dict[str, str]]] = []
    lock = threading.Lock()

    def send() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=60)
        try:
            status, _, headers = post(conn, FRAMES_PATH, body)
        finally:
            conn.close()
        with lock:
            results.append((status, headers))

    threads = [threading.Thread(target=send) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    peak_mib = status_kib(c.proc.pid, "VmHWM") / 1024
    assert len(results) == 64
    assert {status for status, _ in results} <= {202, 503}
    assert all("Retry-After" in h for status, h in results if status == 503)
    stored = sum(1 for status, _ in results if status == 202)
    assert stored >= 32, f"only {stored} of 64 stored"
    assert peak_mib < 160, f"peak RSS {peak_mib:.0f} MiB"
    assert len(c.frames("app")) == stored * 1000


# --- 14: logrotate ------------------------------------------------------------------------


def test_sighup_reopens_files_after_rotation(start_collector: Start) -> None:
    c = start_collector("--quiet")
    assert c.post(FRAMES_PATH, msgpack.packb({"n": 0}))[0] == 202
    os.rename(c.out / "app.ndjson", c.out / "app.ndjson.1")
    assert c.post(FRAMES_PATH, msgpack.packb({"n": 1}))[0] == 202
    c.proc.send_signal(signal.SIGHUP)
    n = 2
    deadline = time.monotonic() + 10
    while not (c.out / "app.ndjson").exists():
        assert time.monotonic() < deadline, "no new file after SIGHUP"
        assert c.post(FRAMES_PATH, msgpack.packb({"n": n}))[0] == 202
        n += 1
        time.sleep(0.05)
    assert c.post(FRAMES_PATH, msgpack.packb({"n": n}))[0] == 202
    assert c.proc.poll() is None
    rotated = [json.loads(line)["n"] for line in (c.out / "app.ndjson.1").read_text().splitlines()]
    current = [f["n"] for f in c.frames("app")]
    assert rotated[:2] == [0, 1]
    assert rotated + current == list(range(n + 1))
    assert current[-1] == n


# --- 15: the API key is never a file name ---------------------------------------------------


def test_api_key_never_names_a_file(start_collector: Start) -> None:
    key = "sk-live-0123456789abcdef"
    c = start_collector("--api-key", key)
    auth = {"Authorization": f"Bearer {key}"}
    frame = {"dt": "2019-03-04T03:44:21Z", "level": "info", "message": "via root"}
    assert c.post("/", msgpack.packb(frame), headers=auth)[0] == 202
    assert c.post(FRAMES_PATH, msgpack.packb(frame), headers=auth)[0] == 202
    names = [str(p.relative_to(c.out)) for p in c.out.rglob("*")]
    assert sorted(names) == ["app.ndjson", "betterstack.ndjson"]
    for args in ([], ["--json"]):
        run = subprocess.run(
            [sys.executable, "-m", "timber", "tail", *args, str(c.out)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 0 and "via root" in run.stdout
        assert key not in run.stdout + run.stderr
    assert c.stop() == 0
    assert key not in c.stderr()


# --- 6: idempotency keys ---------------------------------------------------------------------


def raw_post(port: int, body: bytes, key: str | None) -> bytes:
    """One request on a fresh socket, written by hand; returns the answer."""
    head = (
        f"POST {FRAMES_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/msgpack\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if key is not None:
        head += f"Idempotency-Key: {key}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return answer


def test_idempotency_keys(collector: Collector) -> None:
    batch = msgpack.packb([{"n": 1}, {"n": 2}])
    first = raw_post(collector.port, batch, "batch-0001")
    assert first.startswith(b"HTTP/1.1 202") and first.endswith(b'{"accepted":2}\n')
    again = raw_post(collector.port, batch, "batch-0001")
    assert again.startswith(b"HTTP/1.1 202")
    assert again.endswith(b'{"accepted":2,"replayed":true}\n')
    assert len(collector.frames("app")) == 2  # stored once

    assert raw_post(collector.port, batch, "batch-0002").startswith(b"HTTP/1.1 202")
    assert len(collector.frames("app")) == 4  # a different key is another batch

    for _ in range(2):
        assert raw_post(collector.port, batch, None).startswith(b"HTTP/1.1 202")
    assert len(collector.frames("app")) == 8  # no key: stored every time

    # Keys are per source.
    other = collector.post(
        "/sources/other/frames", batch, headers={"Idempotency-Key": "batch-0001"}
    )
    assert other[0] == 202 and len(collector.frames("other")) == 2

    for bad in ("has space", "x" * 129, "caf\u00e9"):
        answer = raw_post(collector.port, batch, bad)
        assert answer.startswith(b"HTTP/1.1 400"), answer
    assert len(collector.frames("app")) == 8


def test_a_refused_batch_is_not_remembered(collector: Collector) -> None:
    """Only a stored batch records its key: a retry after a failure stores it."""
    assert raw_post(collector.port, b"\xc1", "k-1").startswith(b"HTTP/1.1 400")
    assert raw_post(collector.port, msgpack.packb({"n": 1}), "k-1").startswith(b"HTTP/1.1 202")
    assert collector.frames("app") == [{"n": 1}]
