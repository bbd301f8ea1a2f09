"""Shared fixtures: the bundled collector as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fault_server import FaultServer

# Loopback only: never route test traffic through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read_frames(out: Path, source: str) -> list[dict[str, Any]]:
    """Every frame stored for `source`; fails if any line is not a JSON object."""
    path = out / f"{source}.ndjson"
    if not path.exists():
        return []
    text = path.read_text("utf-8")
    assert text == "" or text.endswith("\n"), "last stored line is incomplete"
    frames = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(f, dict) for f in frames)
    return frames


class Collector:
    """A running `python -m timber collect` on a free port of 127.0.0.1."""

    def __init__(
        self,
        out: Path,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
    ) -> None:
        self.out = out
        env = {k: v for k, v in os.environ.items() if k != "TIMBER_API_KEY"} | (env or {})
        self.stderr_path = out.with_name(out.name + ".stderr")
        command = [sys.executable, "-m", "timber", "collect", "--listen", "127.0.0.1:0"]
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*command, "--out", str(out), *args],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                preexec_fn=preexec_fn,
            )
        assert self.proc.stdout is not None
        self.banner = self.proc.stdout.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.banner)
        if match is None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"collector did not start: {self.banner!r} {self.stderr()!r}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def frames(self, source: str) -> list[dict[str, Any]]:
        """Frames stored so far for `source`."""
        return read_frames(self.out, source)

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str | None = "application/msgpack",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """POSTs `body` to `path`; returns the status and the answer's body."""
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        request = urllib.request.Request(
            self.url + path, data=body, method="POST", headers=all_headers
        )
        try:
            with _OPENER.open(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signals the collector and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return code


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """Starts collectors with extra `timber collect` flags; stops them at teardown."""
    started: list[Collector] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Collector:
        c = Collector(tmp_path / f"logs{len(started)}", *args, env=env)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def collector(start_collector: Callable[..., Collector]) -> Collector:
    """A collector with default settings and `--quiet`."""
    return start_collector("--quiet")


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A scripted endpoint on 127.0.0.1 (see fault_server.py)."""
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own for one test; its handlers are closed after."""
    lg = logging.getLogger(f"test.{id(object())}")
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    yield lg
    for h in list(lg.handlers):
        lg.removeHandler(h)
        h.close()
