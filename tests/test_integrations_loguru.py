"""loguru: records go through ``sink(handler)`` to the collector with
loguru's own fields (level, time, caller, thread, process, bound extra at the
top level, exception), also with ``enqueue=True``: after
``logger.complete()`` and, in a real subprocess, at interpreter exit without
it, whichever of loguru and timber was imported first."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loguru import logger

import timber
from conftest import Collector
from fault_server import run_python, timber_env
from timber.integrations.loguru import sink


@pytest.fixture
def shipped(
    collector: Collector,
) -> Iterator[tuple[timber.TimberHandler, Callable[[], list[dict[str, Any]]]]]:
    handler = timber.TimberHandler(host=collector.url, api_key="k", source_id="lg")

    def stored() -> list[dict[str, Any]]:
        handler.flush()
        return collector.frames("lg")

    yield handler, stored
    handler.close()


def test_loguru_fields_become_the_frame(
    shipped: tuple[timber.TimberHandler, Callable[[], list[dict[str, Any]]]],
) -> None:
    handler, stored = shipped
    seen: list[dict[str, Any]] = []
    ids = [
        logger.add(sink(handler), format="{message}", level="TRACE"),
        logger.add(lambda m: seen.append(m.record), level="TRACE"),
    ]
    try:
        with timber.context(user={"id": 7}):
            logger.bind(shop="north", order={"id": 1}).info("hello {}", "world", attempt=2)
        logger.success("done")
        logger.trace("fine detail")
        logger.bind(name="bob", module="m").warning("reserved names")
        try:
            {}["missing"]
        except KeyError:
            logger.exception("lookup failed")
    finally:
        for i in ids:
            logger.remove(i)

    hello, done, trace, reserved, failed = stored()
    record = seen[0]
    assert hello["message"] == "hello world"
    assert hello["level"] == "info"
    assert hello["shop"] == "north"
    assert hello["order"] == {"id": 1}
    assert hello["attempt"] == 2
    assert "extra" not in hello
    assert hello["context"]["user"] == {"id": 7}
    runtime = hello["context"]["runtime"]
    assert runtime["function"] == "test_loguru_fields_become_the_frame"
    assert runtime["file"] == "test_integrations_loguru.py"
    assert runtime["line"] == record["line"]
    assert runtime["logger_name"] == __name__
    assert runtime["thread_name"] == threading.current_thread().name
    assert hello["context"]["system"]["pid"] == record["process"].id
    when = record["time"].astimezone(datetime.timezone.utc)
    assert hello["dt"] == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert (done["level"], trace["level"]) == ("success", "trace")
    assert reserved["level"] == "warn"
    assert (reserved["extra_name"], reserved["extra_module"]) == ("bob", "m")
    assert failed["level"] == "error"
    assert failed["error"]["name"] == "KeyError"
    assert failed["error"]["message"] == "'missing'"
    assert failed["error"]["backtrace"][-1]["function"] == "test_loguru_fields_become_the_frame"


def test_records_below_the_handlers_level_are_skipped(
    shipped: tuple[timber.TimberHandler, Callable[[], list[dict[str, Any]]]],
) -> None:
    handler, stored = shipped
    handler.setLevel("WARNING")
    sink_id = logger.add(sink(handler), format="{message}")
    try:
        logger.info("skipped")
        logger.error("kept")
    finally:
        logger.remove(sink_id)
    assert [f["message"] for f in stored()] == ["kept"]


def test_enqueued_records_arrive_after_complete(
    shipped: tuple[timber.TimberHandler, Callable[[], list[dict[str, Any]]]],
) -> None:
    handler, stored = shipped
    sink_id = logger.add(sink(handler), format="{message}", enqueue=True)
    try:
        for i in range(300):
            logger.bind(i=i).info("queued {}", i)
        try:
            raise ValueError("from the queue")
        except ValueError:
            logger.exception("failed")
        logger.complete()
    finally:
        logger.remove(sink_id)
    frames = stored()
    assert [f["i"] for f in frames[:-1]] == list(range(300))
    failed = frames[-1]
    # loguru cannot pickle a traceback: the error keeps its name and message.
    assert failed["error"]["name"] == "ValueError"
    assert failed["error"]["message"] == "from the queue"


SCRIPT = """
import sys
{first}
{second}
from timber.integrations.loguru import sink

logger.remove()
logger.add(sink(timber.TimberHandler(flush_interval=60)), format="{{message}}", enqueue=True)
for i in range(2000):
    logger.bind(i=i).info("before exit")
# No logger.complete(): the interpreter exits with records still queued.
"""

IMPORTS = {
    "loguru first": ("from loguru import logger", "import timber"),
    "timber first": ("import timber", "from loguru import logger"),
}


@pytest.mark.parametrize("order", IMPORTS)
def test_enqueued_records_arrive_at_exit(collector: Collector, order: str) -> None:
    first, second = IMPORTS[order]
    proc = run_python(
        SCRIPT.format(first=first, second=second),
        timber_env(collector.url, source_id="exit"),
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(f["i"] for f in collector.frames("exit")) == list(range(2000))
