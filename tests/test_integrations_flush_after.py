"""``flush_after`` for short-lived runtimes: real subprocesses that end with
``os._exit(0)`` right after the decorated function or the ``with`` block
(as Lambda freezes and RQ work horses exit) deliver every record, also when
the body raised; the wait is bounded when the endpoint hangs; a delivery
problem never hides the body's own exception."""

from __future__ import annotations

import logging

import pytest

import timber
from conftest import Collector
from fault_server import FaultServer, Step, run_python, timber_env
from timber.integrations import flush_after

# Not a multiple of buffer_capacity: the last batch is sent only by a flush
# (the flush interval is a minute).
N = 2500

PRELUDE = f"""
N = {N}
import asyncio, logging, os, timber
from timber.integrations import flush_after

log = logging.getLogger("job")
log.setLevel(logging.INFO)
handler = timber.TimberHandler(flush_interval=60)
log.addHandler(handler)
"""

BODIES = {
    "decorator with a handler": """
@flush_after(handler, timeout=30)
def invocation():
    for i in range(N):
        log.info("r", extra={"i": i})
invocation()
""",
    "bare decorator, every handler": """
other = timber.TimberHandler(flush_interval=60, source_id="other")
logging.getLogger("other").addHandler(other)
@flush_after
def invocation():
    for i in range(N):
        log.info("r", extra={"i": i})
        logging.getLogger("other").warning("o", extra={"i": i})
invocation()
""",
    "context manager, body raises": """
try:
    with flush_after(timeout=30):
        for i in range(N):
            log.info("r", extra={"i": i})
        raise RuntimeError("invocation failed")
except RuntimeError:
    pass
""",
    "decorated coroutine function": """
@flush_after()
async def invocation():
    for i in range(N):
        log.info("r", extra={"i": i})
        if i % 1000 == 0:
            await asyncio.sleep(0)
asyncio.run(invocation())
""",
}


@pytest.mark.parametrize("body", BODIES)
def test_every_record_arrives_before_os_exit(collector: Collector, body: str) -> None:
    code = PRELUDE + BODIES[body] + "os._exit(0)\n"
    proc = run_python(code, timber_env(collector.url, source_id="job"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(f["i"] for f in collector.frames("job")) == list(range(N))
    if body == "bare decorator, every handler":
        assert sorted(f["i"] for f in collector.frames("other")) == list(range(N))


def test_the_wait_is_bounded_when_the_endpoint_hangs(server: FaultServer) -> None:
    server.add_script([Step("hang", seconds=60)] * 4)
    code = """
import logging, os, timber
from timber.integrations import flush_after

log = logging.getLogger("job")
handler = timber.TimberHandler(flush_interval=60, flush_timeout=60, timeout=60)
log.addHandler(handler)
with flush_after(timeout=0.5):
    log.warning("never delivered")
print("returned")
os._exit(0)
"""
    # Without the bound the flush would wait 60 s, past this run's limit.
    proc = run_python(code, timber_env(server.host), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "returned\n"


def test_a_delivery_problem_never_hides_the_bodys_exception(
    server: FaultServer, logger: logging.Logger
) -> None:
    handler = timber.TimberHandler(
        host=server.host, api_key="k", source_id="s", raise_exceptions=True
    )
    logger.addHandler(handler)
    # Each batch is refused: dropped, and flush() raises with raise_exceptions.
    server.add_script([400, 400])
    with pytest.raises(ZeroDivisionError):
        with flush_after(handler):
            logger.info("refused")
            1 / 0  # noqa: B018
    with pytest.raises(timber.DeliveryError):
        with flush_after(handler):
            logger.info("refused too")


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="TimberHandler"):
        flush_after(logging.StreamHandler())  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="timeout"):
        flush_after(timeout=-1)
