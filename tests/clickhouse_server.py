"""A real ClickHouse server for the tests: Debian's clickhouse-server
(installed by `make setup`), started as a plain process on free loopback
ports with its configuration in a temporary directory.

The packaged server is 18.16: no Map, DateTime64 or
insert_deduplication_token. `remote_servers` adds a cluster definition
(`<remote_servers>` XML), for `Distributed` tables over several servers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import timber

USER, PASSWORD = "writer", "s3cret"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

CONFIG = """<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  {remote_servers}
</yandex>
"""

USERS = """<yandex>
  <profiles><default></default></profiles>
  <users>
    <{user}>
      <password>{password}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota>
    </{user}>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""

# The otel_logs columns an 18.16 server can hold, with their names.
SCALARS = (
    "Timestamp String, TraceId String, SpanId String, TraceFlags UInt32, "
    "SeverityText String, SeverityNumber Int32, ServiceName String, Body String, "
    "ScopeName String"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ClickHouse:
    def __init__(
        self,
        root: Path,
        remote_servers: str = "",
        tcp_port: int | None = None,
        http_port: int | None = None,
    ) -> None:
        binary = shutil.which("clickhouse-server") or shutil.which(
            "clickhouse-server", path="/usr/sbin:/usr/bin"
        )
        if binary is None:
            pytest.fail("clickhouse-server is not installed: run `make setup`")
        self.port = http_port or free_port()
        self.tcp_port = tcp_port or free_port()
        self.root = root
        root.mkdir(exist_ok=True)
        (root / "config.xml").write_text(
            CONFIG.format(
                http=self.port, tcp=self.tcp_port, dir=root, remote_servers=remote_servers
            ),
            "utf-8",
        )
        (root / "users.xml").write_text(USERS.format(user=USER, password=PASSWORD), "utf-8")
        self.binary = binary
        self.start()

    def start(self) -> None:
        """Starts the server (again, on the same data) and waits for it."""
        root = self.root
        self.log = (root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, f"--config-file={root / 'config.xml'}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with _OPENER.open(f"{self.url}/ping", timeout=1) as r:
                    if r.read() == b"Ok.\n":
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("clickhouse-server did not start: " + (root / "server.log").read_text())
            time.sleep(0.1)

    def query(self, sql: str) -> str:
        request = urllib.request.Request(
            self.url + "/",
            data=sql.encode(),
            method="POST",
            headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD},
        )
        with _OPENER.open(request, timeout=30) as r:
            text: str = r.read().decode()
            return text

    def rows(self, table: str) -> list[dict[str, Any]]:
        out = self.query(f"SELECT * FROM {table} ORDER BY Timestamp FORMAT JSONEachRow")
        return [json.loads(line) for line in out.splitlines()]

    def kill(self) -> None:
        """Stops the server at once, as a crash or an out-of-memory kill
        would (a graceful stop keeps answering while it drains)."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stops a server process: SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def handler(url: str, table: str, **kw: Any) -> timber.TimberHandler:
    """A ClickHouse handler for the tests' server at `url`: its credentials,
    service `shop`, and quick retries."""
    return timber.TimberHandler(
        destination="clickhouse",
        host=url,
        table=table,
        username=USER,
        password=PASSWORD,
        service_name="shop",
        backoff_base=0.05,
        backoff_max=0.1,
        **kw,
    )
