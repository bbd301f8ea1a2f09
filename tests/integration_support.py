"""Helpers of the integration tests: a framework's server or worker as a real
subprocess, and the frames a collector stored, grouped."""

from __future__ import annotations

import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Collector
from fault_server import timber_env


class Process:
    """A server or worker started in `cwd` with a TimberHandler's settings
    for `collector` in its environment; stderr goes to a file."""

    def __init__(
        self,
        command: list[str],
        cwd: Path,
        collector: Collector,
        source: str,
        **env: str,
    ) -> None:
        self.stderr_path = cwd / f"{source}.stderr"
        environment = timber_env(collector.url, source_id=source, PYTHONPATH=str(cwd), **env)
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                command, cwd=cwd, env=environment, stdout=err, stderr=subprocess.STDOUT
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")

    def wait_for_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"did not listen on {port}:\n{self.stderr()}") from None
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signals the process, waits for it, and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def write_module(directory: Path, name: str, code: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(code))


def wait_for(
    collector: Collector,
    source: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 60,
) -> list[dict[str, Any]]:
    """The frames stored for `source` once `done(frames)` holds (or the
    timeout passed: the caller's assertions then say what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        frames = collector.frames(source)
        if done(frames) or time.monotonic() > deadline:
            return frames
        time.sleep(0.1)


def logger_name(frame: dict[str, Any]) -> str:
    return str(frame["context"]["runtime"]["logger_name"])
