"""uWSGI, a real one (from PyPI): it forks its workers in C, where Python's
at-fork hooks never run, and a worker stopped inside a request skips
Python's exit hooks. Every mode of loading the app and every way of
stopping it, idle and busy: every record reaches ``timber collect``, and
no process reports a loss that is not its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import Collector
from fault_server import free_port

UWSGI = shutil.which("uwsgi", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(UWSGI is None, reason="uwsgi is not installed")

REQUESTS, PER_REQUEST = 8, 10

APP = """
import logging, os, time
import timber

handler = timber.TimberHandler(api_key="k", source_id="uwsgi", host=os.environ["COLLECTOR"],
                               flush_interval=float(os.environ["FLUSH_INTERVAL"]))
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
log.info("loaded", extra={"who": {"pid": os.getpid(), "what": "loaded"}})
open(f"{os.environ['MARK']}.loaded.{os.getpid()}", "w").close()

def application(environ, start_response):
    busy = environ["PATH_INFO"] == "/busy"
    # "/" is the probe of the start: it logs nothing.
    for i in range(PER_REQUEST if environ["PATH_INFO"] != "/" else 0):
        log.info("request", extra={"who": {"pid": os.getpid(), "what": "busy" if busy else "idle"}})
    if busy:
        open(os.environ["MARK"], "w").close()
        release = os.environ["MARK"] + ".release"
        deadline = time.monotonic() + 60
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
""".replace("PER_REQUEST", str(PER_REQUEST))


class Uwsgi:
    def __init__(self, tmp: Path, collector: Collector, options: list[str], flush: float) -> None:
        self.tmp = tmp
        app = tmp / "app.py"
        app.write_text(textwrap.dedent(APP))
        self.port = free_port()
        self.fifo = tmp / "fifo"
        self.mark = tmp / "busy"
        self.log = tmp / "uwsgi.log"
        env = {
            **os.environ,
            "COLLECTOR": collector.url,
            "FLUSH_INTERVAL": str(flush),
            "MARK": str(self.mark),
        }
        command = [str(UWSGI), "--master", "--processes", "2", "--need-app"]
        command += ["--http-socket", f"127.0.0.1:{self.port}", "--wsgi-file", str(app)]
        command += ["--home", sys.prefix, "--master-fifo", str(self.fifo)]
        command += ["--worker-reload-mercy", "20", *options]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.get("/")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"uwsgi did not start: {self.log.read_text()}")
        # With --lazy-apps each worker loads the app itself: a stop while
        # one still imports it would end the test's uWSGI, not test timber.
        loads = 2 if "--lazy-apps" in options else 1
        while len(list(tmp.glob("busy.loaded.*"))) < loads and time.monotonic() < deadline:
            time.sleep(0.05)

    def get(self, path: str) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            assert r.read() == b"ok"

    def busy(self) -> None:
        """A request that logs, then stays inside the app until released."""
        self.busy_client = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import urllib.request as u; u.urlopen({self.url!r}, timeout=90)",
            ],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not self.mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.mark.exists()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/busy"

    def stop(self, how: str) -> str:
        if how == "fifo q":
            self.fifo.write_text("q")
            # A graceful stop waits for the request in progress: let it end.
            Path(str(self.mark) + ".release").touch()
        else:
            self.proc.send_signal(
                {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGQUIT": signal.SIGQUIT}[how]
            )
        try:
            self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            client = getattr(self, "busy_client", None)
            if client is not None:
                client.kill()
                client.wait()
        return self.log.read_text("utf-8", "replace")


MODES = {
    "master-loaded": [],
    "lazy-apps": ["--lazy-apps"],
    "py-call-osafterfork": ["--py-call-osafterfork"],
    "enable-threads": ["--enable-threads"],
    "threads": ["--threads", "4"],
    "max-requests": ["--max-requests", "3"],
}
STOPS = ["SIGTERM", "SIGINT", "SIGQUIT", "fifo q"]


def run(tmp: Path, collector: Collector, options: list[str], stop: str, busy: bool) -> None:
    if stop == "SIGTERM":
        options = [*options, "--die-on-term"]
    # A long flush interval: nothing is sent before the stop unless a batch
    # fills, so what arrives was delivered by the stop itself.
    server = Uwsgi(tmp, collector, options, flush=30.0)
    for _ in range(REQUESTS):
        server.get("/request")
    if busy:
        server.busy()
    log = server.stop(stop)
    frames = collector.frames("uwsgi")
    what = Counter(f["who"]["what"] for f in frames)
    lazy = "--lazy-apps" in options
    assert what["idle"] == REQUESTS * PER_REQUEST, log
    assert what["busy"] == (PER_REQUEST if busy else 0), log
    # The master logs "loaded" once; with --lazy-apps each worker loads the
    # app (and --max-requests respawns them), so at least the two workers do.
    assert what["loaded"] >= 2 if lazy else what["loaded"] == 1, log
    assert "were not delivered" not in log, log


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("mode", "stop"), [(mode, STOPS[i % len(STOPS)]) for i, mode in enumerate(MODES)]
)
def test_every_mode_delivers_every_record(
    tmp_path: Path, collector: Collector, mode: str, stop: str
) -> None:
    run(tmp_path, collector, MODES[mode], stop, busy=False)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", STOPS)
def test_a_worker_stopped_inside_a_request_delivers_its_buffer(
    tmp_path: Path, collector: Collector, stop: str
) -> None:
    # SIGINT and SIGQUIT (and SIGTERM with --die-on-term) end a busy worker
    # from a signal handler that skips Python's exit hooks: the engine's own
    # exit hook delivers what it holds, records of earlier requests too.
    run(tmp_path, collector, [], stop, busy=True)
