"""Options as a careless user or an attacker gives them: every input type is
either read or refused by type with an error naming the option, in a real
interpreter (a crash is a signal, not an exception); a value accepted at
construction works, and what cannot work is refused there; a peer's error
text reaches stderr cut and escaped."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

import timber
from fault_server import FaultServer, Step, run_python


@pytest.fixture
def receiver() -> Iterator[FaultServer]:
    s = FaultServer(default_status=200)
    yield s
    s.close()


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIMBER_", "OTEL_"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        base.pop(name, None)
        base.pop(name.lower(), None)
    return run_python(code, base | env, timeout=60)


def test_any_input_type_is_read_or_refused_by_type_never_a_crash() -> None:
    proc = python(
        """
        import os, timber
        class BytesPath:
            def __fspath__(self):
                return b"/tmp/x"
        loop = []
        loop.append(loop)
        cases = [
            ("api_key", b"k"), ("spool_dir", b"/tmp/x"), ("host", b"http://127.0.0.1:9"),
            ("redact", [b"password"]), ("compression", b"gzip"), ("source_id", bytearray(b"s")),
            ("spool_dir", BytesPath()), ("redact", loop), ("redact", [["password"]]),
            ("table", memoryview(b"t")), ("timeout", object()), ("buffer_capacity", 2**200),
        ]
        for name, value in cases:
            options = {"api_key": "k", "source_id": "s", name: value}
            try:
                timber.TimberHandler(**options).close()
            except ValueError as e:
                print(name, "|", e)
            else:
                print(name, "| accepted")
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stdout.splitlines()
    assert len(lines) == 12, proc.stdout
    for line in lines:
        name, message = line.split(" | ")
        assert message.startswith(name + " must be"), line
    assert "got a bytes" in lines[0] and "got a path given as bytes" in lines[6]


def test_an_unknown_option_is_a_type_error_and_a_value_error() -> None:
    for error in (TypeError, ValueError, timber.UnknownOptionError):
        try:
            timber.TimberHandler(api_key="k", source_id="s", flush_intervall=1)
        except error as e:
            assert 'did you mean "flush_interval"' in str(e)
        else:
            raise AssertionError("accepted")
    assert issubclass(timber.UnknownOptionError, TypeError)
    assert issubclass(timber.UnknownOptionError, ValueError)
    # As Python itself words it for a function, the formatter too.
    try:
        timber.TimberFormatter(reddact=["x"])
    except TypeError as e:
        assert "reddact" in str(e)
    else:
        raise AssertionError("accepted")


def refusal(code: str, **env: str) -> str:
    """The ValueError a handler made in a fresh interpreter raises."""
    proc = python(
        "import timber\ntry:\n"
        + textwrap.indent(textwrap.dedent(code), "    ")
        + "\nexcept ValueError as e:\n    print(e)\nelse:\n    print('accepted')\n",
        **env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


HANDLER = "timber.TimberHandler(api_key='k', source_id='s'{})"
DEAD = ", host='http://127.0.0.1:9'"


def test_what_cannot_work_is_refused_at_construction() -> None:
    otlp = ", destination='otlp'"
    for options, env, message in [
        ("", {"TIMBER_HOST": "http://127.0.0.1:9/?q"}, "host (from the environment variable"),
        ("", {"TIMBER_HOST": "http://127.0.0.1:9#frag"}, "no query or fragment"),
        (DEAD, {"HTTP_PROXY": "garbage"}, "invalid proxy setting"),
        (DEAD, {"TIMBER_API_KEY": "kéy"}, "api_key (from the environment variable"),
        (otlp, {"OTEL_EXPORTER_OTLP_HEADERS": "x y=1"}, "OTEL_EXPORTER_OTLP_HEADERS"),
        (otlp, {"OTEL_EXPORTER_OTLP_HEADERS": "x:y=1"}, "header names"),
        (otlp, {"OTEL_EXPORTER_OTLP_TIMEOUT": "1e-9"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ]:
        code = HANDLER.format(options)
        if "TIMBER_API_KEY" in env:
            code = code.replace("api_key='k', ", "")
        said = refusal(code, **env)
        assert message in said, (env, said)
    for option in ("timeout=1e-300", "backoff_base=1e-300, backoff_max=1e-300"):
        said = refusal(HANDLER.format(", " + option))
        assert said.startswith(option.split("=")[0] + " must be at least 0.0"), said


def test_a_missing_ca_bundle_matters_only_to_tls() -> None:
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        for value in ("/nonexistent/ca.pem", "/"):
            plain = HANDLER.format(", host='http://127.0.0.1:9'") + ".close()"
            assert refusal(plain, **{var: value}) == "accepted"
            tls = HANDLER.format(", host='https://127.0.0.1:9'")
            said = refusal(tls, **{var: value})
            assert said.startswith("cannot read ca_bundle"), said


def test_a_receivers_error_message_is_cut_and_escaped(receiver: FaultServer) -> None:
    answer = ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 1
    answer.partial_success.error_message = "\x1b[2J\x1b]0;owned\x07" + "x" * 60_000 + "\nforged"
    receiver.add_script([Step(200, body=answer.SerializeToString())])
    proc = python(
        f"""
        import logging, timber
        h = timber.TimberHandler(destination="otlp", host={receiver.host!r}, buffer_capacity=1)
        logging.getLogger().addHandler(h)
        logging.getLogger().error("one")
        h.flush()
        h.close()
        """
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "rejected 1 records" in x)
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "forged" not in proc.stderr
    assert len(line) < 1000, len(line)
    assert "\\u{1b}[2J" in line


def test_the_formatters_redaction_survives_a_json_encoder() -> None:
    record = logging.LogRecord("l", logging.INFO, "f.py", 1, "m", None, None)
    record.password = "hunter2"
    record.nested = {"list": [{"token": "abc123"}], "token": "abc123"}

    class Encoder(json.JSONEncoder):
        def default(self, o: object) -> object:
            return {"token": "from-encoder"}

    record.obj = object()
    for formatter in (
        timber.TimberFormatter(redact=["password", "token"], json_encoder=Encoder),
        timber.TimberFormatter(redact="password, token", json_encoder=json.JSONEncoder),
        timber.TimberFormatter(redact="password,token"),
    ):
        with timber.context(session={"token": "ctx-secret", "items": [{"password": "ctx2"}]}):
            line = formatter.format(record)
        for secret in ("hunter2", "abc123", "from-encoder", "ctx-secret", "ctx2"):
            assert secret not in line, line
        frame = json.loads(line)
        assert frame["password"] == "[REDACTED]"
        assert frame["nested"]["list"][0]["token"] == "[REDACTED]"
        assert frame["context"]["session"]["token"] == "[REDACTED]"


def test_the_formatter_reads_timber_redact() -> None:
    proc = python(
        """
        import logging, timber
        r = logging.LogRecord("l", logging.INFO, "f.py", 1, "m", None, None)
        r.password = "hunter2"
        r.token = "abc123"
        print(timber.TimberFormatter().format(r))
        """,
        TIMBER_REDACT="password,token",
    )
    assert proc.returncode == 0, proc.stderr
    assert "hunter2" not in proc.stdout and "abc123" not in proc.stdout
    assert json.loads(proc.stdout)["token"] == "[REDACTED]"


def test_the_formatters_redact_is_checked_as_the_handlers() -> None:
    said = refusal("timber.TimberFormatter(redact=[1])")
    assert said.startswith("redact must be a list of key names"), said
