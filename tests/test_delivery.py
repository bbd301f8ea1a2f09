"""Delivery under faults, against real servers on 127.0.0.1: outages, 5xx
storms, Retry-After, hangs, fork in its several forms, and context isolation
on the wire."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import timber
from fault_server import FaultServer, Step, free_port, run_python, timber_env

FAST = {"backoff_base": 0.05, "backoff_max": 0.5, "flush_interval": 0.1}


def attach(logger: logging.Logger, host: str, **kw: Any) -> timber.TimberHandler:
    h = timber.TimberHandler(api_key="k", source_id="s", host=host, **kw)
    logger.addHandler(h)
    return h


def test_ten_second_outage_loses_nothing_with_default_settings(logger: logging.Logger) -> None:
    down = FaultServer()
    port = down.port
    down.close()  # the outage starts before the first record
    h = attach(logger, f"http://127.0.0.1:{port}")
    slowest = 0.0
    start = time.monotonic()
    for i in range(20_000):
        t = time.perf_counter()
        logger.info("during the outage %d", i, extra={"i": i})
        slowest = max(slowest, time.perf_counter() - t)
        if i % 200 == 199:  # 2,000 records/s
            time.sleep(max(0.0, start + (i + 1) / 2000 - time.monotonic()))
    assert h.stats()["failed_attempts"] > 0
    up = FaultServer(port_wanted=port)
    try:
        assert h._engine.flush(90.0)
        assert sorted(f["i"] for f in up.frames) == list(range(20_000))
    finally:
        up.close()
    assert h.dropcount == 0
    # Not a speed check: a call that waited on the network (connect and
    # request timeouts are seconds) would exceed this bound many times over.
    assert slowest < 2.0


def test_server_error_storm_then_everything_arrives(
    server: FaultServer, logger: logging.Logger
) -> None:
    server.add_script([500, 502, 503, 504, 500, 599, 503, 502])
    h = attach(logger, server.host, buffer_capacity=25, **FAST)
    for i in range(100):
        logger.info("storm %d", i, extra={"i": i})
    assert h._engine.flush(60.0)
    assert sorted(f["i"] for f in server.frames) == list(range(100))
    assert h.stats()["retries"] == 8


def test_once_an_attempt_succeeds_the_batches_backing_off_go_at_once(
    server: FaultServer, logger: logging.Logger
) -> None:
    # The outage ends with the first request that succeeds: the batches
    # still waiting out their own backoff (up to 1,000 s here, full jitter)
    # are sent then, not each after its own wait.
    server.add_script([503, 503])
    h = attach(
        logger,
        server.host,
        buffer_capacity=10,
        max_in_flight=3,
        backoff_base=1000,
        backoff_max=1000,
        retry_timeout=3600,
        flush_interval=0.1,
        flush_timeout=30,
    )
    for i in range(10):
        logger.info("first %d", i, extra={"i": i})
    for i in range(10, 20):
        logger.info("second %d", i, extra={"i": i})
    server.wait_for_frames(0)
    deadline = time.monotonic() + 30
    while h.stats()["retries"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.stats()["retries"] == 2  # both batches backing off
    for i in range(20, 30):
        logger.info("after the outage %d", i, extra={"i": i})
    assert h._engine.flush(30.0)
    assert sorted(f["i"] for f in server.frames) == list(range(30))
    assert [r.status for r in server.requests].count(503) == 2


def test_retry_after_is_honoured(server: FaultServer, logger: logging.Logger) -> None:
    server.add_script([Step(429, retry_after="1")])
    h = attach(logger, server.host, **FAST)
    logger.info("throttled")
    assert h._engine.flush(30.0)
    first, second = server.requests
    assert first.status == 429 and second.status == 202
    assert second.received - first.received >= 1.0
    assert [f["message"] for f in second.frames] == ["throttled"]


def test_a_hang_past_the_timeout_is_retried(server: FaultServer, logger: logging.Logger) -> None:
    server.add_script([Step("hang", seconds=5)])
    h = attach(logger, server.host, timeout=0.5, **FAST)
    logger.info("patience")
    assert h._engine.flush(30.0)
    assert [r.status for r in server.requests] == ["hang", 202]


def test_retry_timeout_drops_and_counts(server: FaultServer, logger: logging.Logger) -> None:
    server.add_script([503] * 100)
    h = attach(logger, server.host, retry_timeout=0.5, **FAST)
    logger.info("given up")
    assert h._engine.flush(30.0)
    assert h.stats()["dropped_by_reason"]["retry_timeout"] == 1


def test_threads_and_tasks_never_carry_each_others_context(
    server: FaultServer, logger: logging.Logger
) -> None:
    h = attach(logger, server.host)

    def thread_work(i: int) -> None:
        with timber.context(owner={"id": f"thread-{i}"}):
            for n in range(50):
                logger.info("t", extra={"me": f"thread-{i}", "n": n})

    threads = [threading.Thread(target=thread_work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()

    async def task(i: int) -> None:
        with timber.context(owner={"id": f"task-{i}"}):
            await asyncio.sleep(0)
            logger.info("a", extra={"me": f"task-{i}"})
            await asyncio.sleep(0)
            logger.info("b", extra={"me": f"task-{i}"})

    async def tasks() -> None:
        await asyncio.gather(*(task(i) for i in range(1000)))

    asyncio.run(tasks())
    for t in threads:
        t.join()
    assert h._engine.flush(30.0)
    frames = server.frames
    assert len(frames) == 16 * 50 + 2000
    assert [f for f in frames if f["context"]["owner"]["id"] != f["me"]] == []


def run(code: str, host: str) -> subprocess.CompletedProcess[str]:
    return run_python(code, timber_env(host))


def test_multiprocessing_with_fork(server: FaultServer) -> None:
    proc = run(
        """
        import logging, multiprocessing, timber
        log = logging.getLogger("mp")
        log.setLevel(logging.INFO)
        log.addHandler(timber.TimberHandler(flush_interval=60))
        log.info("parent", extra={"who": "parent"})

        def work(n):
            for i in range(50):
                log.info("child", extra={"who": f"worker-{n}", "i": i})
            return n

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(2) as pool:
                assert sorted(pool.map(work, range(4))) == [0, 1, 2, 3]
                pool.close()
                pool.join()
        """,
        server.host,
    )
    assert proc.returncode == 0, proc.stderr
    frames = server.frames
    assert [f["who"] for f in frames].count("parent") == 1
    for n in range(4):
        assert sorted(f["i"] for f in frames if f["who"] == f"worker-{n}") == list(range(50))


def test_gunicorn_preload_with_several_workers(server: FaultServer, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """
            import logging, os, time, timber
            log = logging.getLogger("web")
            log.setLevel(logging.INFO)
            log.addHandler(timber.TimberHandler(flush_interval=0.2))
            log.info("loaded before fork", extra={"phase": "preload"})

            def application(environ, start_response):
                time.sleep(0.05)  # long enough for concurrent requests to spread
                path = environ["PATH_INFO"]
                log.info("request %s", path, extra={"phase": "request", "path": path})
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [str(os.getpid()).encode()]
            """
        )
    )
    port = free_port()
    env = timber_env(server.host)
    gunicorn = [sys.executable, "-m", "gunicorn", "--preload", "-w", "3"]
    proc = subprocess.Popen(
        [*gunicorn, "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "app:application"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)

        def get(i: int) -> str:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/r{i}")
            body = conn.getresponse().read().decode()
            conn.close()
            return body

        with ThreadPoolExecutor(max_workers=6) as pool:
            pids = set(pool.map(get, range(60)))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    frames = server.wait_for_frames(61)
    paths = sorted(f["path"] for f in frames if f["phase"] == "request")
    assert paths == sorted(f"/r{i}" for i in range(60))
    assert [f["phase"] for f in frames].count("preload") == 1
    worker_pids = {str(f["context"]["system"]["pid"]) for f in frames if f["phase"] == "request"}
    assert worker_pids <= pids and len(pids) >= 2


def test_nothing_the_engine_does_is_logged_back(server: FaultServer) -> None:
    # Every logger in the process feeds this handler, at DEBUG: if sending,
    # retrying or failing logged anything through Python logging, it would
    # come back as records.
    server.add_script([503, Step("reset"), 500])
    root = logging.getLogger()
    old_level = root.level
    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host, **FAST)
    root.addHandler(h)
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("app").info("the only record")
        assert h._engine.flush(30.0)
        assert h.stats()["batches_in_flight"] == 0
    finally:
        root.removeHandler(h)
        root.setLevel(old_level)
        h.close()
    assert [f["message"] for f in server.frames] == ["the only record"]
    assert h.stats()["accepted"] == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_refused_and_never_followed(status: int) -> None:
    # The final server would accept everything: a client that followed the
    # redirect would deliver there (or, turning the POST into a GET, lose the
    # batch while counting it sent) and hand the key to another host.
    final = FaultServer(script=[200] * 20)
    first = FaultServer()
    try:
        target = f"{final.host}/sources/s/frames"
        first.add_script([Step(status, location=target)] * 20)
        key = "redirect-key-never-printed"
        proc = run_python(
            """
            import json, logging, timber
            log = logging.getLogger("redirect")
            h = timber.TimberHandler(flush_interval=60)
            log.addHandler(h)
            for i in range(3):
                log.error("moved", extra={"i": i})
            h.flush()
            print(json.dumps(h.stats()))
            """,
            timber_env(first.host, api_key=key),
        )
        assert proc.returncode == 0, proc.stderr
        stats = json.loads(proc.stdout)
        assert final.requests == []
        assert [r.status for r in first.requests] == [status]
        assert stats["sent"] == 0
        assert stats["dropped_by_reason"]["rejected"] == 3
        assert f"the endpoint redirects ({status}) to {target}; set host to the final URL" in (
            proc.stderr
        )
        assert key not in proc.stderr
        assert proc.stderr.splitlines()[-1] == (
            "timber: 3 of 3 records were not delivered (rejected: 3)"
        )
    finally:
        first.close()
        final.close()


POOL_APP = """
import logging, multiprocessing, sys, timber
log = logging.getLogger("pool")
log.setLevel(logging.INFO)
log.addHandler(timber.TimberHandler(flush_interval=60))


def task(n):
    for i in range(100):
        log.info("from a task", extra={"n": n, "i": i})
    return n


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    # Leaving the block calls terminate(): every worker gets SIGTERM.
    with ctx.Pool(2) as p:
        assert p.map(task, range(8)) == list(range(8))
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_workers_deliver_when_the_pool_terminates_them(
    server: FaultServer, tmp_path: Path, method: str
) -> None:
    app = tmp_path / "pool_app.py"
    app.write_text(POOL_APP)
    proc = subprocess.run(
        [sys.executable, str(app), method],
        env=timber_env(server.host),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    frames = server.wait_for_frames(800, timeout=10)
    assert sorted((f["n"], f["i"]) for f in frames) == [
        (n, i) for n in range(8) for i in range(100)
    ]


def test_a_program_that_handles_sigterm_keeps_its_handler(server: FaultServer) -> None:
    proc = run(
        """
        import logging, multiprocessing, signal, timber
        log = logging.getLogger("own")
        log.addHandler(timber.TimberHandler(flush_interval=60))

        def own(signum, frame):
            raise SystemExit(0)

        def child(q):
            signal.signal(signal.SIGTERM, own)
            log.warning("child")
            q.put(signal.getsignal(signal.SIGTERM) is own)

        def plain(q):
            q.put(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            q = ctx.Queue()
            for target in (child, plain):
                p = ctx.Process(target=target, args=(q,))
                p.start()
                print(q.get())
                p.join()
            print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """,
        server.host,
    )
    assert proc.returncode == 0, proc.stderr
    # The child's own handler stays; a child that has not set one gets
    # timber's; the main process is left alone.
    assert proc.stdout.split() == ["True", "False", "True"]
