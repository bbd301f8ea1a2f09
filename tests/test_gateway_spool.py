"""The gateway's promise under an outage: with `--spool-dir`, a request is
answered 202 only if what the gateway holds can all go to the spool, so a
SIGTERM while ClickHouse is down loses nothing it accepted; what does not
fit is refused with 503 and `Retry-After`, before the spool is full.

The spool is bounded by `--spool-max-bytes`, and by the free space of its
file system (shown on a small tmpfs where this process may mount one). The
clients post as fast as they can; a long run of the same is
`bench/gateway_outage.py`."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from clickhouse_server import PASSWORD, USER, ClickHouse, free_port
from conftest import Collector

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Each frame becomes a row of about 1 KB.
PAD = "p" * 700
PER_REQUEST = 100


def post(url: str, body: bytes) -> tuple[int, str | None]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/msgpack"}
    )
    try:
        with _OPENER.open(request, timeout=60) as r:
            r.read()
            return r.status, None
    except urllib.error.HTTPError as e:
        with e:
            e.read()
            return e.code, e.headers.get("Retry-After")


class Clients:
    """Threads posting requests of distinct ids as fast as they are answered,
    until each has been refused `refusals` times (or `limit` seconds)."""

    def __init__(self, url: str, threads: int = 4, refusals: int = 5, limit: float = 20) -> None:
        self.accepted: set[int] = set()
        self.refused = 0
        self.retry_after: set[str | None] = set()
        self.other: list[int] = []
        self.lock = threading.Lock()
        self.url = f"{url}/sources/shop/frames"
        self.deadline = time.monotonic() + limit
        self.refusals = refusals
        self.workers = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]
        for w in self.workers:
            w.start()
        for w in self.workers:
            w.join()

    def run(self, worker: int) -> None:
        refused = 0
        n = 0
        while refused < self.refusals and time.monotonic() < self.deadline:
            first = (worker << 32) + n * PER_REQUEST
            n += 1
            ids = range(first, first + PER_REQUEST)
            frames = [
                {"dt": "2026-11-24T10:00:00Z", "level": "info", "message": PAD, "job": {"id": i}}
                for i in ids
            ]
            status, retry_after = post(self.url, msgpack.packb(frames))
            with self.lock:
                if status == 202:
                    self.accepted.update(ids)
                elif status == 503:
                    refused += 1
                    self.refused += 1
                    self.retry_after.add(retry_after)
                else:
                    self.other.append(status)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, where this process may mount one (root, mount(8))."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    # A full disk cannot be made without a file system of our own: where
    # mounting one is not allowed the test says so and does not run (CI and
    # the development machines run as root, so there it runs). The spool's
    # own bound is checked without a mount by the test after it.
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def outage_then_restart(
    start_collector: Callable[..., Collector], tmp_path: Path, spool: Path, *more: str
) -> None:
    port = free_port()
    flags = (
        "--clickhouse", f"http://127.0.0.1:{port}", "--table", "outage", "--create-table",
        "--username", USER, "--password", PASSWORD, "--spool-dir", str(spool), *more,
    )  # fmt: skip
    gw = start_collector(*flags)
    # Nothing listens on ClickHouse's port: everything taken must be kept.
    clients = Clients(gw.url)
    assert clients.other == []
    assert clients.refused > 0, "the spool never filled"
    assert clients.retry_after == {"1"}
    assert gw.stop() == 0
    last = gw.stderr().splitlines()[-1]
    totals = re.search(r"(\d+) records in ClickHouse, (\d+) spooled, (\d+) dropped", last)
    assert totals is not None, last
    assert int(totals.group(3)) == 0, last
    assert int(totals.group(2)) == len(clients.accepted), last
    # Refused before the spool was full: no write to it ever failed.
    assert "could not spool" not in gw.stderr()
    assert "has no room to keep more records" in gw.stderr()
    ch = ClickHouse(tmp_path / "ch", http_port=port)
    try:
        again = start_collector(*flags)
        deadline = time.monotonic() + 60
        while True:
            try:
                count = int(ch.query("SELECT count() FROM outage"))
            except OSError:
                count = 0
            if count >= len(clients.accepted) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        ids = ch.query(
            "SELECT DISTINCT LogAttributes.value[indexOf(LogAttributes.key, 'job.id')] FROM outage"
        )
        stored = {int(line) for line in ids.split()}
        assert stored == clients.accepted
        assert again.stop() == 0
    finally:
        ch.close()


def test_what_the_gateway_answered_202_survives_sigterm_on_a_small_disk(
    start_collector: Callable[..., Collector], tmp_path: Path, small_fs: Path
) -> None:
    outage_then_restart(start_collector, tmp_path, small_fs / "spool")


def test_the_spool_is_bounded_by_spool_max_bytes(
    start_collector: Callable[..., Collector], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    outage_then_restart(start_collector, tmp_path, spool, "--spool-max-bytes", "4MiB")
    # The spool never held more than asked (the records all fit in the bound).
    assert not any(spool.rglob("*.seg"))
