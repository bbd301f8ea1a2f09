"""Process lifecycle in real subprocesses: delivery at exit without flush(),
bounded exit when the endpoint is down or hangs, and fork."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import timber
from fault_server import FaultServer, Step, run_python, timber_env

KEY = "key-that-must-never-be-printed"


def run(code: str, host: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_python(code, timber_env(host, api_key=KEY), timeout=timeout)


def test_records_logged_just_before_exit_all_arrive(server: FaultServer) -> None:
    proc = run(
        """
        import logging, timber
        log = logging.getLogger("exit")
        log.setLevel(logging.INFO)
        log.addHandler(timber.TimberHandler(flush_interval=60))
        for i in range(5000):
            log.info("bye %d", i, extra={"i": i})
        """,
        server.host,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(f["i"] for f in server.frames) == list(range(5000))
    assert proc.stderr == ""


def test_logging_shutdown_delivers_without_atexit(server: FaultServer) -> None:
    proc = run(
        """
        import logging, os, timber
        log = logging.getLogger("shutdown")
        log.setLevel(logging.INFO)
        log.addHandler(timber.TimberHandler(flush_interval=60))
        for i in range(300):
            log.info("r", extra={"i": i})
        logging.shutdown()
        os._exit(0)
        """,
        server.host,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(server.frames) == 300


def test_exit_is_bounded_when_the_endpoint_hangs(server: FaultServer) -> None:
    server.add_script([Step("hang", seconds=60)] * 10)
    proc = run(
        """
        import logging, timber
        log = logging.getLogger("hang")
        log.addHandler(timber.TimberHandler(shutdown_timeout=1, timeout=30))
        log.warning("never delivered")
        """,
        server.host,
        timeout=30,
    )
    assert proc.returncode == 0
    assert "1 of 1 records were not delivered" in proc.stderr
    assert KEY not in proc.stderr


def test_exit_is_bounded_when_the_endpoint_is_down() -> None:
    proc = run(
        """
        import logging, timber
        log = logging.getLogger("down")
        log.addHandler(timber.TimberHandler(shutdown_timeout=1))
        for i in range(10):
            log.error("lost %d", i)
        """,
        "http://127.0.0.1:9",
        timeout=30,
    )
    assert proc.returncode == 0
    assert "10 of 10 records were not delivered" in proc.stderr
    assert proc.stderr.count("delivery to") <= 1
    assert KEY not in proc.stderr


def test_host_credentials_are_not_printed() -> None:
    proc = run(
        """
        import logging, timber
        log = logging.getLogger("creds")
        log.addHandler(timber.TimberHandler(shutdown_timeout=0.5))
        log.error("lost")
        """,
        "http://user:host-password@127.0.0.1:9",
        timeout=30,
    )
    assert proc.returncode == 0
    assert "delivery to http://127.0.0.1:9/sources/s/frames failed" in proc.stderr
    assert "host-password" not in proc.stderr


def test_logging_shutdown_waits_once_within_shutdown_timeout(server: FaultServer) -> None:
    server.add_script([Step("hang", seconds=60)] * 10)
    proc = run(
        """
        import logging, os, time, timber
        log = logging.getLogger("bounded")
        log.addHandler(timber.TimberHandler(shutdown_timeout=1, flush_timeout=30, timeout=60))
        log.addHandler(timber.TimberHandler(shutdown_timeout=1, flush_timeout=30, timeout=60))
        log.error("stuck")
        start = time.monotonic()
        logging.shutdown()
        print(round(time.monotonic() - start))
        os._exit(0)
        """,
        server.host,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # Not a speed check: without the bound it would wait 30 s and more.
    assert int(proc.stdout) <= 5


def test_a_constructor_that_raises_leaves_nothing_for_exit() -> None:
    proc = run(
        """
        import logging.config, timber
        try:
            timber.TimberHandler(api_key="k", source_id="s", buffer_capacity=0)
        except ValueError:
            pass
        """,
        "http://127.0.0.1:9",
    )
    assert proc.returncode == 0
    assert proc.stderr == ""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_forked_child_delivers_and_parent_records_are_sent_once(server: FaultServer) -> None:
    proc = run(
        """
        import logging, os, timber
        log = logging.getLogger("fork")
        log.setLevel(logging.INFO)
        h = timber.TimberHandler(flush_interval=60)
        log.addHandler(h)
        for i in range(50):
            log.info("parent before fork", extra={"who": "parent", "i": i})
        pid = os.fork()
        if pid == 0:
            for i in range(100):
                log.info("child", extra={"who": "child", "i": i})
            h.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        for i in range(50, 60):
            log.info("parent after fork", extra={"who": "parent", "i": i})
        """,
        server.host,
    )
    assert proc.returncode == 0, proc.stderr
    frames = server.frames
    child = sorted(f["i"] for f in frames if f["who"] == "child")
    parent = sorted(f["i"] for f in frames if f["who"] == "parent")
    assert child == list(range(100))
    assert parent == list(range(60))
    child_pids = {f["context"]["system"]["pid"] for f in frames if f["who"] == "child"}
    parent_pids = {f["context"]["system"]["pid"] for f in frames if f["who"] == "parent"}
    assert len(child_pids) == 1 and len(parent_pids) == 1 and child_pids != parent_pids


def test_engine_module_has_no_tokio_threads_when_logging(server: FaultServer) -> None:
    proc = run(
        """
        import logging, os, timber
        log = logging.getLogger("threads")
        h = timber.TimberHandler(max_in_flight=2)
        log.addHandler(h)
        log.warning("one")
        h.flush()
        names = sorted(open(f"/proc/self/task/{t}/comm").read().strip()
                       for t in os.listdir("/proc/self/task"))
        print(",".join(names))
        """,
        server.host,
    )
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.strip().split(",")
    assert not [n for n in names if "tokio" in n]
    assert names.count("timber-sender-0") == 1
    assert timber.__version__


BLOCKED = """
import json, logging, sys, threading, time, timber
log = logging.getLogger("blocked")
h = timber.TimberHandler(drop_extra_events=False, buffer_capacity=10, max_buffer_records=20,
                         max_in_flight=1, timeout=60, shutdown_timeout=1)
log.addHandler(h)

def work(n):
    # Blocked on its 1st to 3rd record; the rest are logged after the close,
    # most of them while it is still delivering (they are refused at once).
    for i in range(50_000):
        log.error("r", extra={"n": n, "i": i})

threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(8)]
for t in threads:
    t.start()
# 20 records fill the buffer (a batch hangs in flight, the next waits); each
# thread then blocks on its next record, waiting for room.
deadline = time.monotonic() + 30
while h.stats()["accepted"] < 28 and time.monotonic() < deadline:
    time.sleep(0.01)
assert h.stats()["buffered_records"] == 20, h.stats()
if sys.argv[-1] == "close":
    h.close()
    for t in threads:
        t.join()
    print(json.dumps(h.stats()))
"""


def test_totals_add_up_with_threads_blocked_waiting_for_room_at_close(server: FaultServer) -> None:
    server.add_script([Step("hang", seconds=60)] * 10)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED, "close"],
        env=timber_env(server.host, api_key=KEY),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["accepted"] == 400_000
    assert stats["accepted"] == stats["sent"] + stats["dropped"] + stats["buffered_records"]
    assert stats["dropped"] == stats["dropped_by_reason"]["shutdown"] == 400_000
    totals = [line for line in proc.stderr.splitlines() if "records were not delivered" in line]
    for line in totals:
        dropped, accepted = map(int, re.findall(r"(\d+) of (\d+) records", line)[0])
        assert dropped <= accepted, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "timber: 400000 of 400000 records were not delivered (shutdown: 400000)"
    ), proc.stderr


def test_totals_add_up_with_threads_blocked_waiting_for_room_at_exit(server: FaultServer) -> None:
    server.add_script([Step("hang", seconds=60)] * 10)
    proc = run_python(BLOCKED, timber_env(server.host, api_key=KEY), timeout=60)
    assert proc.returncode == 0, proc.stderr
    # The daemon threads go on logging until the interpreter stops them, so
    # how many records they handed over is not known here; the last line
    # counts every one, and none was delivered.
    last = proc.stderr.splitlines()[-1]
    match = re.fullmatch(
        r"timber: (\d+) of (\d+) records were not delivered \(shutdown: (\d+)\)", last
    )
    assert match is not None, proc.stderr
    dropped, accepted, shutdown = map(int, match.groups())
    assert dropped == accepted == shutdown >= 28, proc.stderr
    assert server.frames == []


def test_threads_waiting_for_room_do_not_hold_up_exit(server: FaultServer) -> None:
    # Threads that are not daemons are joined before any exit hook: waiting
    # for room while the endpoint hangs (retried for 300 s), they would keep
    # the process alive that long.
    server.add_script([Step("hang", seconds=60)] * 10)
    proc = run(
        """
        import logging, threading, time, timber
        log = logging.getLogger("waiting")
        h = timber.TimberHandler(drop_extra_events=False, buffer_capacity=10,
                                 max_buffer_records=20, max_in_flight=1, timeout=60,
                                 shutdown_timeout=1)
        log.addHandler(h)

        def work(n):
            for i in range(20):
                log.error("r", extra={"n": n, "i": i})

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        # The buffer holds 20; the threads not done are blocked on a record.
        while h.stats()["accepted"] < 23:
            time.sleep(0.01)
        """,
        server.host,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.splitlines()[-1]
    match = re.fullmatch(r"timber: 80 of 80 records were not delivered \((.*)\)", last)
    assert match is not None, proc.stderr
    assert "buffer_full" in match.group(1), proc.stderr


def test_timber_first_imported_in_an_exit_hook(server: FaultServer) -> None:
    proc = run(
        """
        import atexit, threading  # threading's exit has begun when the hook runs

        def late():
            import logging, timber
            log = logging.getLogger("late-import")
            log.setLevel(logging.INFO)
            h = timber.TimberHandler(flush_interval=60)
            log.addHandler(h)
            log.info("imported at exit")
            h.close()

        atexit.register(late)
        """,
        server.host,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert [f["message"] for f in server.frames] == ["imported at exit"]
