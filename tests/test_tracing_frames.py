"""The Rust `tracing` layer (crates/timber-tracing) and the Python handler
send the same frame for the README's example: the `quickstart` example
binary and the seed snippet, run into one collector, agree field for field
and in key order, except for what describes the process and the call site
(`dt`, `context.runtime.*`, `context.system.pid` and `process_name`), whose
shapes still agree."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import Collector
from fault_server import run_python, timber_env

ROOT = Path(__file__).resolve().parent.parent

# The README's "Use" snippet, as written.
SEED = """
import logging
import timber

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

timber_handler = timber.TimberHandler(source_id='YOUR_SOURCE_ID', api_key='YOUR_API_KEY')
logger.addHandler(timber_handler)

with timber.context(user={'id': 123}):
    logger.info('Order #1234 placed, total: $520.23', extra={
        'order_placed': {'id': 1234, 'total': 520.23},
    })
"""

DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(scope="session")
def quickstart() -> Path:
    """The example binary, built (or found up to date) by cargo."""
    built = subprocess.run(
        [
            "cargo",
            "build",
            "--locked",
            "--quiet",
            "--message-format=json",
            "-p",
            "timber-tracing",
            "--example",
            "quickstart",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in built.stdout.splitlines():
        message = json.loads(line)
        target = message.get("target", {})
        if target.get("name") == "quickstart" and message.get("executable"):
            return Path(message["executable"])
    raise AssertionError("cargo reported no quickstart executable")


def shape(value: Any) -> Any:
    """Keys in order and value types, for the fields whose values differ."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    return type(value).__name__


def without_process_fields(frame: dict[str, Any]) -> dict[str, Any]:
    f = copy.deepcopy(frame)
    del f["dt"]
    f["context"]["runtime"] = None
    f["context"]["system"]["pid"] = None
    f["context"]["system"]["process_name"] = None
    return f


def test_quickstart_and_the_python_seed_send_the_same_frame(
    collector: Collector, quickstart: Path
) -> None:
    rust = subprocess.run(
        [str(quickstart)],
        env=timber_env(collector.url, api_key="YOUR_API_KEY", source_id="rust"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rust.returncode == 0, rust.stderr
    python = run_python(SEED, timber_env(collector.url), timeout=60)
    assert python.returncode == 0, python.stderr

    # Each exits having delivered: no waiting for the collector.
    [from_rust] = collector.frames("rust")
    [from_python] = collector.frames("YOUR_SOURCE_ID")

    assert without_process_fields(from_rust) == without_process_fields(from_python)
    # Same keys in the same order, at every level, and the same types where
    # the values are the process's own.
    assert shape(from_rust) == shape(from_python)
    assert DT.match(from_rust["dt"]) and DT.match(from_python["dt"])
    assert from_rust["context"]["user"] == {"id": 123}
    assert from_rust["order_placed"] == {"id": 1234, "total": 520.23}
    assert from_rust["context"]["runtime"]["logger_name"] == "quickstart"
    assert from_python["context"]["runtime"]["logger_name"] == "__main__"
    assert from_rust["context"]["system"]["process_name"] == "quickstart"
