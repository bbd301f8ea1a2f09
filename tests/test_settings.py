"""Options as a newcomer writes them: every wrong value is one ValueError
naming the option and what it accepts, the same inline and from dictConfig;
the words 'true'/'false' mean what they say; the handler's signature and the
configuration table (docs/configuration.md) agree with the engine's single
declaration of the options."""

from __future__ import annotations

import inspect
import logging
import logging.config
import re
from pathlib import Path
from typing import Any

import pytest

import timber
from fault_server import FaultServer
from timber import _engine

CONFIGURATION = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BASE = {"api_key": "k", "source_id": "s", "host": "http://127.0.0.1:9"}

# (option, wrong value, the start of the message a user sees)
WRONG: list[tuple[str, Any, str]] = [
    ("timeout", 0, "timeout must be a number of seconds greater than 0 and up to 3600, got 0"),
    ("flush_interval", 0, "flush_interval must be a number of seconds greater than 0"),
    ("flush_interval", -1, "flush_interval must be a number of seconds greater than 0"),
    ("retry_timeout", float("nan"), "retry_timeout must be a number of seconds from 0 up to"),
    ("shutdown_timeout", "5", "shutdown_timeout must be a number of seconds from 0"),
    (
        "compression",
        "brotli",
        "compression must be one of 'gzip', 'deflate', 'zstd' or None, got \"brotli\"",
    ),
    ("buffer_capacity", 0, "buffer_capacity must be a whole number from 1 to 1000000, got 0"),
    ("buffer_capacity", "10", "buffer_capacity must be a whole number"),
    ("buffer_capacity", 2.5, "buffer_capacity must be a whole number"),
    ("max_buffer_bytes", 0, "max_buffer_bytes must be a whole number from 2000000"),
    ("max_in_flight", 1000, "max_in_flight must be a whole number from 1 to 64, got 1000"),
    ("max_buffer_records", 10, "max_buffer_records must be at least buffer_capacity (1000)"),
    ("drop_extra_events", "no", "drop_extra_events must be True or False"),
    ("raise_exceptions", 1, "raise_exceptions must be True or False"),
    ("include_extra_attributes", None, "include_extra_attributes must be True or False"),
    ("host", "logs.example.com", "host must be a URL starting with http:// or https://"),
    ("api_key", "abc\r\nX-Injected: 1", "api_key must not contain control characters"),
    ("spool_max_bytes", -1, "spool_max_bytes must be a whole number"),
    ("ca_bundle", 123, "ca_bundle must be a path"),
    ("destination", "splunk", "destination must be one of 'timber'"),
    ("backoff_max", 0.1, "backoff_base must be at most backoff_max (0.1), got 0.5"),
]


@pytest.mark.parametrize(("option", "value", "message"), WRONG)
def test_a_wrong_value_is_one_clear_value_error(option: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError) as inline:
        timber.TimberHandler(**{**BASE, option: value})
    assert str(inline.value).startswith(message), str(inline.value)

    config = {
        "version": 1,
        "handlers": {"t": {"class": "timber.TimberHandler", **BASE, option: value}},
    }
    with pytest.raises(ValueError) as configured:
        logging.config.dictConfig(config)
    # dictConfig wraps the handler's error; the cause is the same error.
    assert str(configured.value.__cause__) == str(inline.value)


def test_backoff_base_above_backoff_max() -> None:
    with pytest.raises(ValueError, match=r"^backoff_base must be at most backoff_max \(1\)"):
        timber.TimberHandler(**BASE, backoff_base=5, backoff_max=1)


def test_unknown_options_are_refused_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r'unknown option "flush_intervall".*"flush_interval"'):
        timber.TimberHandler(**BASE, flush_intervall=3)


def test_words_for_booleans_from_ini_or_yaml_files() -> None:
    h = timber.TimberHandler(**BASE, drop_extra_events="false", include_extra_attributes="True")
    try:
        assert h.drop_extra_events is False
        assert h.include_extra_attributes is True
    finally:
        h.close()


def test_environment_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMBER_HOST", "ftp://logs")
    with pytest.raises(ValueError, match=r"^host \(from the environment variable TIMBER_HOST\)"):
        timber.TimberHandler(api_key="k", source_id="s")


def test_signature_defaults_are_the_engines() -> None:
    declared = {name: default for name, default, _env, _doc in _engine.declared()}
    params = inspect.signature(timber.TimberHandler.__init__).parameters
    for name, p in params.items():
        if name in ("self", "context", "level", "options"):
            continue
        assert name in declared, name
        # None in the signature means "not given": the engine's default or
        # the environment applies.
        if p.default is not None:
            assert p.default == declared[name], name


def test_documented_table_lists_every_option_and_only_those() -> None:
    text = CONFIGURATION.read_text("utf-8")
    table = text.split("\n| option | default | meaning |\n", 1)[1]
    table = table.split("\n\n`handler.stats()`", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?(?:, `(\w+)`)?", table, re.M))
    names = {n for row in documented for n in row if n} - {"context", "level"}
    declared = {name for name, *_ in _engine.declared()}
    assert names == declared


def test_settings_read_back_as_the_engine_runs_them() -> None:
    h = timber.TimberHandler(**BASE, compression=None, timeout=2.5)
    try:
        assert h.compression is None
        assert h.timeout == 2.5
        assert h.flush_timeout == 10.0
        assert h.host == "http://127.0.0.1:9"
    finally:
        h.close()


def test_raise_exceptions_changed_after_construction_is_followed_by_emit() -> None:
    h = timber.TimberHandler(**BASE, raise_exceptions=True)
    try:
        with pytest.raises(AttributeError):
            h.emit(object())  # type: ignore[arg-type]
        h.raise_exceptions = False
        h.emit(object())  # type: ignore[arg-type]
        assert h.stats()["dropped_by_reason"]["error"] == 2
    finally:
        h.close()


def test_stats_add_up(server: FaultServer, logger: logging.Logger) -> None:
    server.add_script([401] + [202] * 10)
    h = timber.TimberHandler(
        api_key="k", source_id="s", host=server.host, buffer_capacity=10, max_buffer_records=25
    )
    logger.addHandler(h)
    for i in range(100):
        logger.info("n %d", i)
    h.emit(object())  # type: ignore[arg-type]
    h.flush()
    s = h.stats()
    assert s["accepted"] == 101
    assert s["accepted"] == s["sent"] + s["dropped"] + s["buffered_records"]
    assert s["dropped"] == sum(s["dropped_by_reason"].values())
    assert s["dropped_by_reason"]["rejected"] == 10
    h.close()
    logger.info("after close")
    s = h.stats()
    assert s["dropped_by_reason"]["shutdown"] == 1
    assert s["accepted"] == s["sent"] + s["dropped"] + s["buffered_records"]
