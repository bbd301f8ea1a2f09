"""The durable spool: batches that cannot be delivered go to disk, are
replayed in order when the endpoint is back, and survive SIGKILL to be
replayed by the next process on the same spool."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import msgpack
import pytest

import timber
from fault_server import FaultServer, Step, free_port, run_python, timber_env

FAST = {"backoff_base": 0.05, "backoff_max": 0.3, "flush_interval": 0.1}


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_outage_goes_to_disk_and_replays_in_order(tmp_path: Path) -> None:
    port = free_port()
    log = logging.getLogger("spool.outage")
    log.propagate = False
    h = timber.TimberHandler(
        api_key="k",
        source_id="s",
        host=f"http://127.0.0.1:{port}",
        spool_dir=tmp_path / "spool",
        buffer_capacity=50,
        # One request at a time: batches in flight together may fail, and so
        # be spooled, in either order.
        max_in_flight=1,
        **FAST,
    )
    log.addHandler(h)
    try:
        for i in range(300):
            log.warning("down", extra={"i": i})
        wait_until(lambda: h.stats()["spooled"] == 300 and h.stats()["buffered_records"] == 0)
        server = FaultServer(port_wanted=port)
        try:
            for i in range(300, 350):
                log.warning("recovering", extra={"i": i})
            wait_until(lambda: len(server.frames) >= 350)
            assert [f["i"] for f in server.frames] == list(range(350))
            assert h.stats()["replayed"] >= 300
        finally:
            server.close()
    finally:
        log.removeHandler(h)
        h.close()


def test_sigkill_then_a_new_process_replays_the_spool(tmp_path: Path) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    env = {
        **os.environ,
        "TIMBER_HOST": f"http://127.0.0.1:{port}",
        "TIMBER_API_KEY": "k",
        "TIMBER_SOURCE_ID": "s",
    }
    writer = textwrap.dedent(
        f"""
        import logging, sys, time, timber
        log = logging.getLogger("killed")
        h = timber.TimberHandler(spool_dir={str(spool)!r}, buffer_capacity=100,
                                 backoff_base=0.05, backoff_max=0.3, flush_interval=0.1)
        log.addHandler(h)
        for i in range(1000):
            log.error("before the kill", extra={{"i": i}})
        while h.stats()["spooled"] < 1000:
            time.sleep(0.02)
        print("spooled", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spooled"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()

    server = FaultServer(port_wanted=port)
    try:
        reader = textwrap.dedent(
            f"""
            import logging, time, timber
            h = timber.TimberHandler(spool_dir={str(spool)!r}, backoff_base=0.05,
                                     backoff_max=0.3, flush_interval=0.1)
            deadline = time.monotonic() + 60
            while h.stats()["replayed"] < 1000 and time.monotonic() < deadline:
                time.sleep(0.05)
            print(h.stats()["replayed"])
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", reader], env=env, capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 0, done.stderr
        assert sorted(f["i"] for f in server.frames) == list(range(1000))
    finally:
        server.close()
    # Everything replayed: the lanes left are empty.
    assert not list(spool.glob("*/*.seg")) or all(
        p.stat().st_size == 0 for p in spool.glob("*/*.seg")
    )


def test_unusable_spool_dir_is_a_value_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    try:
        timber.TimberHandler(api_key="k", source_id="s", spool_dir=blocker)
    except ValueError as e:
        assert "spool_dir" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_batches_in_flight_at_exit_are_spooled_and_replayed_by_the_next_process(
    tmp_path: Path,
) -> None:
    # The endpoint accepts connections and never answers: at exit the two
    # batches in flight are neither delivered nor failed. They must reach the
    # spool with the ones never taken, and the next process sends them all.
    spool = tmp_path / "spool"
    hanging = FaultServer(script=[Step("hang", seconds=120)] * 20)
    try:
        first = run_python(
            f"""
            import logging, timber
            log = logging.getLogger("in-flight")
            log.setLevel(logging.INFO)
            log.addHandler(timber.TimberHandler(spool_dir={str(spool)!r}, timeout=10,
                                                shutdown_timeout=2))
            for i in range(5000):
                log.info("r", extra={{"i": i}})
            """,
            timber_env(hanging.host),
            timeout=60,
        )
        assert first.returncode == 0, first.stderr
        assert hanging.requests, "no batch was in flight at exit"
        assert "not delivered" not in first.stderr
    finally:
        hanging.close()
    healthy = FaultServer()
    try:
        second = run_python(
            f"""
            import time, timber
            h = timber.TimberHandler(spool_dir={str(spool)!r}, backoff_base=0.05,
                                     backoff_max=0.3)
            deadline = time.monotonic() + 60
            while h.stats()["replayed"] < 5000 and time.monotonic() < deadline:
                time.sleep(0.05)
            """,
            timber_env(healthy.host),
            timeout=90,
        )
        assert second.returncode == 0, second.stderr
        assert {f["i"] for f in healthy.frames} == set(range(5000))
    finally:
        healthy.close()


def test_a_spool_deleted_while_in_use_is_counted_and_spooling_goes_on(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    log = logging.getLogger("spool.deleted")
    log.propagate = False
    h = timber.TimberHandler(
        api_key="k",
        source_id="s",
        host=f"http://127.0.0.1:{port}",
        spool_dir=spool,
        buffer_capacity=100,
        max_in_flight=1,
        **FAST,
    )
    log.addHandler(h)
    try:
        for i in range(4000):
            log.warning("spooled, then deleted", extra={"i": i})
        wait_until(lambda: h.stats()["spooled"] == 4000 and h.stats()["buffered_records"] == 0)
        # What a tmp cleaner does.
        shutil.rmtree(spool)
        for i in range(4000, 5000):
            log.warning("spooled after", extra={"i": i})
        wait_until(
            lambda: (
                h.stats()["dropped_by_reason"]["spool_lost"] == 4000
                and h.stats()["spooled"] == 5000
            )
        )
        server = FaultServer(port_wanted=port)
        try:
            wait_until(lambda: h.stats()["replayed"] == 1000)
            assert sorted(f["i"] for f in server.frames) == list(range(4000, 5000))
        finally:
            server.close()
    finally:
        log.removeHandler(h)
        h.close()
    stats = h.stats()
    assert stats["dropped"] == stats["dropped_by_reason"]["spool_lost"] == 4000
    assert stats["spooled"] == stats["replayed"] + stats["dropped"]
    err = capfd.readouterr().err
    assert re.search(r"deleted while in use .*: \d+ spooled records lost \(spool_lost\)", err), err
    assert err.splitlines()[-1] == (
        "timber: 4000 of 5000 records were not delivered (spool_lost: 4000)"
    )


def _segment(frames: list[dict[str, object]]) -> bytes:
    """One spool entry as the engine writes it (see spool/segment.rs)."""
    payload = msgpack.packb(frames)
    return b"TSB1" + struct.pack("<III", len(payload), len(frames), zlib.crc32(payload)) + payload


def test_thousands_of_leftover_lanes_hold_no_descriptors_and_are_removed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # 3,000 lanes of processes that are gone: most empty (as every process
    # used to leave its lane), ten with records to replay.
    with_records = {0, 1, 42, 700, 1234, 1500, 1501, 2200, 2998, 2999}
    for k in range(3000):
        lane = spool / f"{10**19 + k:020d}-{100000 + k}"
        lane.mkdir(parents=True)
        (lane / "lock").touch()
        if k in with_records:
            frames = [{"message": "left behind", "lane": k, "j": j} for j in range(10)]
            (lane / f"{1:016d}.seg").write_bytes(_segment(frames))
    server = FaultServer()
    try:
        code = f"""
            import json, os, time, timber
            spool = {str(spool)!r}
            h = timber.TimberHandler(spool_dir=spool, backoff_base=0.05, backoff_max=0.3)
            held = len(os.listdir("/proc/self/fd"))
            # The application can still open files.
            files = [open(os.devnull) for _ in range(150)]
            for f in files:
                f.close()
            deadline = time.monotonic() + 60
            while (h.stats()["replayed"] < 100 or len(os.listdir(spool)) > 1) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            print(json.dumps({{"held": held, "lanes": len(os.listdir(spool)), **h.stats()}}))
            """

        def low_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=timber_env(server.host),
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=low_limit,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["held"] < 40, out
        assert out["replayed"] == out["adopted"] == 100
        assert out["lanes"] == 1, "only the process's own lane is left"
        assert sorted((f["lane"], f["j"]) for f in server.frames) == sorted(
            (k, j) for k in with_records for j in range(10)
        )
    finally:
        server.close()
    # Its own lane, empty, went at exit.
    assert list(spool.iterdir()) == []


def test_records_taken_over_from_an_earlier_process_are_in_the_totals(tmp_path: Path) -> None:
    # Ten records left by a process that is gone; the endpoint refuses them.
    # They are this process's to count: never "10 of 5 records were not
    # delivered".
    spool = tmp_path / "spool"
    lane = spool / f"{10**19:020d}-100000"
    lane.mkdir(parents=True)
    (lane / "lock").touch()
    left = [{"message": "left behind", "i": -1 - j} for j in range(10)]
    (lane / f"{1:016d}.seg").write_bytes(_segment(left))
    server = FaultServer(script=[400])
    try:
        proc = run_python(
            f"""
            import json, logging, time, timber
            log = logging.getLogger("adopter")
            h = timber.TimberHandler(spool_dir={str(spool)!r}, flush_interval=0.1)
            log.addHandler(h)
            deadline = time.monotonic() + 30
            while h.stats()["dropped"] < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            for i in range(5):
                log.error("mine", extra={{"i": i}})
            h.close()
            print(json.dumps(h.stats()))
            """,
            timber_env(server.host),
            timeout=60,
        )
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "timber: 10 of 15 records were not delivered (rejected: 10)"
    )
    stats = json.loads(proc.stdout)
    assert (stats["accepted"], stats["adopted"], stats["sent"]) == (5, 10, 5)
    assert stats["dropped_by_reason"]["rejected"] == 10
    handled = stats["accepted"] + stats["adopted"]
    assert handled == stats["sent"] + stats["dropped"] + stats["buffered_records"]
