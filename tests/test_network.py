"""The network as users have it: TLS verified against a CA bundle or the
system's store, proxies from the environment, compressed bodies."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

import timber
from conftest import Collector
from fault_server import ConnectProxy, FaultServer, free_port, run_python


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[FaultServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = FaultServer(tls=context)
    yield server
    server.close()


def ship(host: str, **kw: Any) -> timber.TimberHandler:
    h = timber.TimberHandler(api_key="k", source_id="s", host=host, flush_interval=0.1, **kw)
    record = logging.getLogger("net").makeRecord("net", 20, "f.py", 1, "over the wire", (), None)
    h.handle(record)
    return h


def test_tls_with_a_ca_bundle(tls_server: FaultServer, ca: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    h = ship(tls_server.host, ca_bundle=bundle)
    assert h._engine.flush(20.0)
    h.close()
    assert [f["message"] for f in tls_server.frames] == ["over the wire"]


def test_tls_is_never_silently_unverified(tls_server: FaultServer) -> None:
    h = ship(tls_server.host, retry_timeout=1.0)
    h.flush()
    h.close()
    assert tls_server.frames == []
    stats = h.stats()
    assert stats["sent"] == 0 and stats["failed_attempts"] >= 1


def test_ssl_cert_file_and_requests_ca_bundle_are_honoured(
    tls_server: FaultServer, ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        code = f"""
            import logging, timber
            log = logging.getLogger("tls")
            log.addHandler(timber.TimberHandler(api_key="k", source_id="s", host="{tls_server.host}"))
            log.warning("via {variable}")
        """
        env = {"PATH": "", variable: str(bundle)}
        proc = run_python(code, env, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert sorted(f["message"] for f in tls_server.frames) == [
        "via REQUESTS_CA_BUNDLE",
        "via SSL_CERT_FILE",
    ]


def test_unreadable_ca_bundle_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ca_bundle"):
        timber.TimberHandler(api_key="k", source_id="s", ca_bundle=tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match="ca_bundle"):
        timber.TimberHandler(api_key="k", source_id="s", ca_bundle=junk)


def test_http_proxy_from_the_environment(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ConnectProxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        h = ship(server.host)
        assert h._engine.flush(20.0)
        h.close()
    finally:
        proxy.close()
    assert proxy.targets == [f"127.0.0.1:{server.port}"]
    assert [f["message"] for f in server.frames] == ["over the wire"]


def test_no_proxy_bypasses_the_proxy(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    h = ship(server.host)
    assert h._engine.flush(20.0)
    h.close()
    [request] = server.requests
    assert request.path == "/sources/s/frames"


@pytest.mark.parametrize("compression", ["gzip", "deflate", None])
def test_compression_is_declared_and_decodes(server: FaultServer, compression: str | None) -> None:
    h = ship(server.host, compression=compression)
    h.flush()
    h.close()
    [request] = server.requests
    assert request.headers.get("content-encoding") == compression
    assert [f["message"] for f in request.frames] == ["over the wire"]


def test_zstd_reaches_the_collector(collector: Collector) -> None:
    h = ship(collector.url, compression="zstd")
    h.flush()
    h.close()
    assert [f["message"] for f in collector.frames("s")] == ["over the wire"]


def test_unknown_compression_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="compression"):
        timber.TimberHandler(api_key="k", source_id="s", compression="brotli")


def test_default_compression_shrinks_the_body(server: FaultServer) -> None:
    h = timber.TimberHandler(api_key="k", source_id="s", host=server.host)
    log = logging.getLogger("shrink")
    log.addHandler(h)
    try:
        for i in range(500):
            log.warning("Order %d placed", i, extra={"order": {"id": i, "total": 5.5}})
        h.flush()
    finally:
        log.removeHandler(h)
        h.close()
    stats = h.stats()
    raw = sum(r.size for r in server.requests)
    assert stats["sent"] == 500
    assert stats["bytes_sent"] * 3 < raw
