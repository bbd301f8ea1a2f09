"""No secret in any message: every secret option (API key, ClickHouse user and
password, OTLP headers, a URL's userinfo, a proxy's) is given a marked value,
valid and invalid, to the handler, the collector, the gateway and `timber
query`, run as real processes against a real ClickHouse and ports nothing
listens on; the marker appears in none of what they write (stderr lines,
exceptions, banners, logs, errors)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from clickhouse_server import ClickHouse
from conftest import Collector
from fault_server import free_port

MARK = "Mk" + secrets.token_hex(6)


def clean_env(**extra: str) -> dict[str, str]:
    prefixes = ("TIMBER_", "OTEL_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(prefixes)}
    return env | extra


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    server = ClickHouse(tmp_path_factory.mktemp("ch") / "server")
    try:
        yield server
    finally:
        server.close()


def python(code: str, **env: str) -> str:
    """Everything a fresh interpreter running `code` writes."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


# Each handler is made, logs, flushes (raising DeliveryError) and closes;
# every exception is printed, as an application's log would show it.
HANDLERS = """
import logging, timber
def attempt(**options):
    try:
        h = timber.TimberHandler(
            shutdown_timeout=1, flush_timeout=2, retry_timeout=1, raise_exceptions=True,
            **options,
        )
    except Exception as e:
        print("refused:", type(e).__name__, e)
        return
    log = logging.getLogger("secret")
    log.addHandler(h)
    log.error("a record")
    try:
        h.flush()
    except Exception as e:
        print("flush:", type(e).__name__, e)
    log.removeHandler(h)
    h.close()
"""


def test_the_handler_writes_no_secret(clickhouse: ClickHouse) -> None:
    dead = f"127.0.0.1:{free_port()}"
    ch = clickhouse.url.removeprefix("http://")
    userinfo = f"http://u:{MARK}@"
    calls = [
        # Valid values, and delivery fails or is refused.
        f"attempt(api_key={MARK!r}, source_id='s', host='http://{dead}')",
        f"attempt(api_key='k', source_id='s', host='{userinfo}{dead}')",
        f"attempt(destination='clickhouse', host='http://{ch}', username='writer', "
        f"password={MARK!r})",
        f"attempt(destination='clickhouse', host='http://{dead}', username={MARK!r})",
        # ClickHouse names the user it does not know: the handler does not repeat it.
        f"attempt(destination='clickhouse', host='http://{ch}', username={MARK!r}, "
        f"password={MARK!r})",
        f"attempt(destination='clickhouse', host='http://writer:{MARK}@{ch}')",
        f"attempt(destination='otlp', host='http://{dead}', api_key={MARK!r})",
        f"attempt(destination='betterstack', host='http://{dead}', api_key={MARK!r})",
        # Invalid values.
        f"attempt(api_key={MARK + chr(10)!r}, source_id='s')",
        f"attempt(api_key={MARK + 'é'!r}, source_id='s')",
        f"attempt(api_key={MARK + ' x'!r}, source_id='s')",
        f"attempt(api_key={MARK.encode()!r}, source_id='s')",
        f"attempt(api_key=[{MARK!r}], source_id='s')",
        f"attempt(destination='clickhouse', username={MARK + chr(13)!r})",
        f"attempt(destination='clickhouse', password={MARK + chr(0)!r})",
        f"attempt(api_key='k', source_id='s', host='{userinfo}{dead}:99999')",
        f"attempt(api_key='k', source_id='s', host='{userinfo}{dead}/?q=1')",
        f"attempt(api_key='k', source_id='s', host='{userinfo}{dead} x')",
        f"attempt(destination='clickhouse', host='{userinfo}{dead}', tabel='t')",
    ]
    said = python(HANDLERS + "\n".join(calls))
    assert said.count("refused:") == 11, said
    assert said.count("flush:") == 8, said
    assert MARK not in said, said


@pytest.mark.parametrize(
    "env",
    [
        {"TIMBER_API_KEY": MARK},
        {"TIMBER_API_KEY": MARK + "\n"},
        {"TIMBER_API_KEY": MARK + "é"},
        {"TIMBER_HOST": f"http://u:{MARK}@127.0.0.1:9"},
        {"TIMBER_HOST": f"http://u:{MARK}@127.0.0.1:9#f"},
        {"HTTP_PROXY": f"http://u:{MARK}@127.0.0.1:9"},
        {"HTTP_PROXY": f"http://u:{MARK}@[bad"},
        {"HTTP_PROXY": f"u:{MARK}@proxy"},
        {"TIMBER_DESTINATION": "clickhouse", "TIMBER_CLICKHOUSE_USER": MARK},
        {"TIMBER_DESTINATION": "clickhouse", "TIMBER_CLICKHOUSE_USER": MARK + "\n"},
        {"TIMBER_DESTINATION": "clickhouse", "TIMBER_CLICKHOUSE_PASSWORD": MARK},
        {"TIMBER_DESTINATION": "clickhouse", "TIMBER_CLICKHOUSE_PASSWORD": MARK + "\x7f\n"},
        {
            "TIMBER_DESTINATION": "otlp",
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {MARK}",
        },
        {
            "TIMBER_DESTINATION": "otlp",
            "OTEL_EXPORTER_OTLP_HEADERS": f"x=1,Authorization={MARK}%0A",
        },
        {"TIMBER_DESTINATION": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": f"bad name={MARK}"},
        {"TIMBER_DESTINATION": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://u:{MARK}@h:0"},
        {"TIMBER_DESTINATION": "otlp", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://u:{MARK}@h?"},
    ],
)
def test_the_environment_writes_no_secret(env: dict[str, str]) -> None:
    base = {"TIMBER_SOURCE_ID": "s", "TIMBER_HOST": f"http://127.0.0.1:{free_port()}"}
    if "TIMBER_API_KEY" not in env and env.get("TIMBER_DESTINATION") in (None, "timber"):
        base["TIMBER_API_KEY"] = "k"
    if any(k.startswith("OTEL_EXPORTER_OTLP_") and "ENDPOINT" in k for k in env):
        del base["TIMBER_HOST"]
    said = python(HANDLERS + "attempt()", **(base | env))
    assert "refused:" in said or "flush:" in said, said
    assert MARK not in said, said


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "timber", *argv],
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout + proc.stderr


def test_the_collector_and_the_gateway_write_no_secret(
    clickhouse: ClickHouse, tmp_path: Path
) -> None:
    ch = clickhouse.url.removeprefix("http://")
    frame = json.dumps({"level": "info", "message": "m", "dt": "2026-01-01T00:00:00Z"}).encode()
    written = []
    for flags, env in [
        (("--api-key", MARK), {}),
        (("--clickhouse", f"http://writer:{MARK}@{ch}"), {}),
        (("--clickhouse", clickhouse.url, "--username", "writer", "--password", MARK), {}),
        (("--clickhouse", f"http://127.0.0.1:{free_port()}", "--username", MARK), {}),
        (("--clickhouse", clickhouse.url, "--username", MARK), {}),
        (("--clickhouse", clickhouse.url), {"TIMBER_CLICKHOUSE_PASSWORD": MARK}),
        (("--clickhouse", f"http://u:{MARK}@127.0.0.1:{free_port()}"), {}),
    ]:
        c = Collector(tmp_path / f"out{len(written)}", *flags, env=clean_env(**env))
        try:
            for key in ("wrong", MARK):
                c.post(
                    "/sources/s/frames",
                    frame,
                    "application/json",
                    headers={"Authorization": f"Bearer {key}"},
                )
        finally:
            c.stop()
        written.append(c.banner + c.stderr())
    for flags in [
        ("--clickhouse", clickhouse.url, "--password", MARK + "\n"),
        ("--clickhouse", clickhouse.url, "--username", MARK + "\r"),
        ("--clickhouse", f"http://u:{MARK}@{ch}:99999"),
        ("--clickhouse", f"http://u:{MARK}@{ch}/?x"),
        ("--api-key", MARK, "--max-body", "nonsense"),
    ]:
        written.append(run("collect", "--listen", "127.0.0.1:0", *flags))
    written.append(
        run(
            "collect",
            "--listen",
            "127.0.0.1:0",
            "--clickhouse",
            clickhouse.url,
            env={"TIMBER_CLICKHOUSE_PASSWORD": MARK + "\n"},
        )
    )
    said = "\n".join(written)
    assert said.count("listening on") == 7, said
    assert MARK not in said, said


def test_timber_query_writes_no_secret(clickhouse: ClickHouse) -> None:
    ch = clickhouse.url.removeprefix("http://")
    dead = f"127.0.0.1:{free_port()}"
    written = [
        run("query", "--clickhouse", f"http://writer:{MARK}@{ch}"),
        run("query", "--clickhouse", clickhouse.url, "--password", MARK),
        run("query", "--clickhouse", clickhouse.url, env={"TIMBER_CLICKHOUSE_PASSWORD": MARK}),
        run("query", "--clickhouse", f"http://u:{MARK}@{dead}"),
        run("query", "--clickhouse", clickhouse.url, "--password", MARK + "\n"),
        run("query", "--clickhouse", f"http://u:{MARK}@{ch}:99999"),
        run("query", "--clickhouse", f"http://u:{MARK}@{ch}/?q"),
        run("query", "--clickhouse", f"http://u:{MARK}@{ch} x"),
    ]
    said = "\n".join(written)
    assert said.count("timber query: ") == len(written), said
    assert MARK not in said, said


def test_a_gateways_url_userinfo_is_used_and_never_shown(
    clickhouse: ClickHouse, tmp_path: Path
) -> None:
    from clickhouse_server import PASSWORD, USER

    host = clickhouse.url.removeprefix("http://")
    c = Collector(
        tmp_path / "out",
        "--clickhouse",
        f"http://{USER}:{PASSWORD}@{host}",
        "--table",
        "userinfo_logs",
        "--create-table",
        env=clean_env(),
    )
    try:
        frame = json.dumps({"level": "info", "message": "through userinfo"}).encode()
        status, _ = c.post("/sources/s/frames", frame, "application/json")
        assert status == 202
    finally:
        c.stop()
    said = c.banner + c.stderr()
    assert f"forwarding to ClickHouse at {clickhouse.url}, table userinfo_logs" in said, said
    assert PASSWORD not in said, said
    assert [r["Body"] for r in clickhouse.rows("userinfo_logs")] == ["through userinfo"]
