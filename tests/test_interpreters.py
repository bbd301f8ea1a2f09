"""The abi3 extension on newer interpreters (3.12 and 3.13 forbid starting
threads during interpreter shutdown): records logged at exit, even the first
one logged from an atexit hook, are delivered, and exit stays bounded."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import timber
from fault_server import FaultServer, Step, run_python, timber_env

PACKAGE_DIR = str(Path(timber.__file__).resolve().parent.parent)


def interpreter(name: str) -> str:
    """A working `name` (python3.12, ...): on PATH, or in a pyenv tree."""
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    version = name.removeprefix("python")
    candidates = [shutil.which(name), *sorted(Path(pyenv).glob(f"versions/{version}*/bin/{name}"))]
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run([str(candidate), "-c", "pass"], capture_output=True)
        if probe.returncode == 0:
            return str(candidate)
    # Skipped, not failed, where the image has no such interpreter: the test
    # exercises that interpreter and has nothing to run without it.
    pytest.skip(f"{name} is not installed here")


def run(python: str, host: str, code: str) -> subprocess.CompletedProcess[str]:
    env = timber_env(host, PYTHONPATH=PACKAGE_DIR)
    env.pop("VIRTUAL_ENV", None)
    return run_python(code, env, python=python)


@pytest.mark.parametrize("name", ["python3.12", "python3.13"])
def test_exit_delivers_on_newer_interpreters(server: FaultServer, name: str) -> None:
    proc = run(
        interpreter(name),
        server.host,
        """
        import atexit, logging, sys, timber
        log = logging.getLogger("newer")
        log.setLevel(logging.INFO)
        log.addHandler(timber.TimberHandler(flush_interval=60))
        # Registered after timber's own hook, so it runs first: the sender
        # thread is started during interpreter shutdown.
        atexit.register(lambda: log.info("from atexit", extra={"i": -1}))
        if sys.argv[-1] != "lazy":
            for i in range(2000):
                log.info("before exit", extra={"i": i})
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert sorted(f["i"] for f in server.frames) == list(range(-1, 2000))


@pytest.mark.parametrize("name", ["python3.12", "python3.13"])
def test_exit_is_bounded_on_newer_interpreters(server: FaultServer, name: str) -> None:
    server.add_script([Step("hang", seconds=60)] * 5)
    proc = run(
        interpreter(name),
        server.host,
        """
        import logging, timber
        log = logging.getLogger("newer")
        log.addHandler(timber.TimberHandler(shutdown_timeout=1, timeout=60))
        log.error("stuck")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 records were not delivered" in proc.stderr


EVERY = ["python3.10", "python3.11", "python3.12", "python3.13"]


@pytest.mark.parametrize("name", EVERY)
def test_exit_hooks_registered_before_timber_log_into_an_open_handler(
    server: FaultServer, name: str
) -> None:
    proc = run(
        interpreter(name),
        server.host,
        """
        import atexit, logging
        log = logging.getLogger("early-hook")
        log.setLevel(logging.INFO)

        def log_at_exit():
            for i in range(100):
                log.info("from an exit hook", extra={"i": i})

        # Registered before timber is imported (and before multiprocessing,
        # whose exit hook runs timber's finalizer in children): exit hooks
        # run last-registered first, so this one runs after both.
        atexit.register(log_at_exit)
        import multiprocessing.util
        import timber
        log.addHandler(timber.TimberHandler(flush_interval=60))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert sorted(f["i"] for f in server.frames) == list(range(100))


@pytest.mark.parametrize("name", EVERY)
def test_a_queue_drained_into_the_handler_at_exit_is_delivered(
    server: FaultServer, name: str
) -> None:
    # As loguru's enqueue=True sinks: a thread writes queued records into
    # the handler, and an exit hook registered before the handler existed
    # drains the queue and stops the thread.
    proc = run(
        interpreter(name),
        server.host,
        """
        import atexit, logging, queue, threading
        log = logging.getLogger("queued")
        log.setLevel(logging.INFO)
        pending = queue.Queue()
        go = threading.Event()

        def sink():
            go.wait()
            while (i := pending.get()) is not None:
                log.info("drained at exit", extra={"i": i})

        worker = threading.Thread(target=sink, daemon=True)
        worker.start()

        def stop():
            pending.put(None)
            go.set()
            worker.join()

        atexit.register(stop)
        import timber
        log.addHandler(timber.TimberHandler(flush_interval=60))
        for i in range(100):
            pending.put(i)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert sorted(f["i"] for f in server.frames) == list(range(100))


@pytest.mark.parametrize("name", EVERY)
def test_records_logged_after_timber_closed_at_exit_are_in_the_last_line(
    server: FaultServer, name: str
) -> None:
    # What runs after logging's own exit hook finds the handler closed: an
    # exit hook registered before logging was imported, and a __del__ during
    # interpreter finalization. Those records are refused and counted, and
    # the last line on stderr counts them.
    proc = run(
        interpreter(name),
        server.host,
        """
        import atexit

        def too_late():
            import logging
            for i in range(10):
                logging.getLogger("late").error("after close", extra={"i": 1000 + i})

        atexit.register(too_late)
        import logging, timber
        log = logging.getLogger("late")
        log.addHandler(timber.TimberHandler(flush_interval=60))

        class LogsWhenCollected:
            def __init__(self):
                self.log = log

            def __del__(self):
                self.log.error("from __del__", extra={"i": 2000})

        keep = LogsWhenCollected()
        for i in range(100):
            log.error("before exit", extra={"i": i})
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(f["i"] for f in server.frames) == list(range(100))
    last = proc.stderr.splitlines()[-1]
    assert last == "timber: 11 of 111 records were not delivered (shutdown: 11)", proc.stderr
