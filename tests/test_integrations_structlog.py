"""structlog through its stdlib routes into a TimberHandler and the
collector: ``render_to_log_kwargs`` (structlog's own, and timber's, which
renames keys logging reserves and finds the app's caller), and
``ProcessorFormatter`` set on the handler (the event is the message, and
structlog's private keys are never sent)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

import timber
from conftest import Collector
from timber.integrations import structlog as timber_structlog

PRIVATE = ("_logger", "_name", "_record", "_from_structlog")


@pytest.fixture(params=["made by structlog", "made before structlog"])
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A stdlib logger of its own, made by structlog's LoggerFactory (which
    fixes findCaller) or, as often happens, by logging before structlog."""
    name = f"sl.{uuid.uuid4().hex}"
    # LoggerFactory() sets logging's logger class for good: put it back after.
    logger_class = logging.getLoggerClass()
    if request.param == "made by structlog":
        lg = structlog.stdlib.LoggerFactory()(name)
    else:
        lg = logging.getLogger(name)
    assert (type(lg) is logging.Logger) == (request.param == "made before structlog")
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    yield lg
    for h in list(lg.handlers):
        lg.removeHandler(h)
        h.close()
    logging.setLoggerClass(logger_class)


@pytest.fixture
def shipped(
    collector: Collector, logger: logging.Logger
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """`logger` with a TimberHandler; the function returns what the
    collector stored after a flush. structlog's configuration is reset
    after the test."""
    handler = timber.TimberHandler(host=collector.url, api_key="k", source_id="sl")
    logger.addHandler(handler)

    def stored() -> list[dict[str, Any]]:
        handler.flush()
        return collector.frames("sl")

    yield stored
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def configure(last: Any) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            last,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def place_order(log: Any) -> None:
    log.info("order %s placed", 1234, order={"id": 1234, "total": 520.23})


@pytest.mark.parametrize(
    "render",
    [structlog.stdlib.render_to_log_kwargs, timber_structlog.render_to_log_kwargs],
    ids=["structlog", "timber"],
)
def test_render_to_log_kwargs_makes_event_keys_top_level_fields(
    shipped: Callable[[], list[dict[str, Any]]], logger: logging.Logger, render: Any
) -> None:
    configure(render)
    log = structlog.get_logger(logger.name)
    structlog.contextvars.bind_contextvars(request_id="r-1")
    with timber.context(user={"id": 7}):
        place_order(log.bind(shop="north"))
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("could not ship", attempt=2)
    log.debug("kept at DEBUG")
    logger.setLevel(logging.INFO)
    log.debug("dropped by filter_by_level")

    placed, failed, debug = shipped()
    assert placed["message"] == "order 1234 placed"
    assert placed["order"] == {"id": 1234, "total": 520.23}
    assert placed["shop"] == "north"
    assert placed["request_id"] == "r-1"
    assert placed["context"]["user"] == {"id": 7}
    runtime = placed["context"]["runtime"]
    if render is structlog.stdlib.render_to_log_kwargs and type(logger) is logging.Logger:
        # structlog's own processor leaves the caller to findCaller, which
        # stops in structlog unless its LoggerFactory made the logger.
        assert runtime["function"] == "_proxy_to_logger"
    else:
        assert runtime["function"] == "place_order"
        assert runtime["file"] == "test_integrations_structlog.py"
    assert failed["level"] == "error"
    assert failed["attempt"] == 2
    assert failed["error"]["name"] == "KeyError"
    assert failed["error"]["backtrace"][-1]["function"].startswith("test_render_to_log_kwargs")
    assert "exc_info" not in failed
    assert debug["message"] == "kept at DEBUG"
    assert not any(key in frame for frame in (placed, failed, debug) for key in PRIVATE)


def test_timber_render_to_log_kwargs_renames_what_logging_reserves(
    shipped: Callable[[], list[dict[str, Any]]], logger: logging.Logger
) -> None:
    configure(timber_structlog.render_to_log_kwargs)
    log = structlog.get_logger(logger.name)
    # structlog's own processor makes this call raise KeyError in makeRecord.
    log.info("user signed in", name="ann", module="auth", extra_module="taken", message="hi")
    (frame,) = shipped()
    assert frame["message"] == "user signed in"
    assert frame["extra_name"] == "ann"
    assert frame["_extra_module"] == "auth"
    assert frame["extra_module"] == "taken"
    assert frame["extra_message"] == "hi"
    assert frame["context"]["runtime"]["logger_name"] == logger.name


def formatter_route(logger: logging.Logger) -> Any:
    """structlog wrapping its event dict for a ProcessorFormatter, which is
    set on the TimberHandler."""
    configure(structlog.stdlib.ProcessorFormatter.wrap_for_formatter)
    # (pytest adds its capture handlers to loggers that do not propagate)
    (handler,) = [h for h in logger.handlers if isinstance(h, timber.TimberHandler)]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                timber_structlog.render_event,
            ]
        )
    )
    return structlog.get_logger(logger.name)


def test_processor_formatter_event_is_the_message(
    shipped: Callable[[], list[dict[str, Any]]], logger: logging.Logger
) -> None:
    log = formatter_route(logger)
    place_order(log)
    (frame,) = shipped()
    assert frame["message"] == "order 1234 placed"


def test_processor_formatter_private_keys_never_leak(
    shipped: Callable[[], list[dict[str, Any]]], logger: logging.Logger
) -> None:
    log = formatter_route(logger)
    place_order(log)
    (frame,) = shipped()
    assert not any(key in frame for key in PRIVATE)
    assert not any(key in frame["message"] for key in PRIVATE)


def test_processor_formatter_handles_foreign_records(
    shipped: Callable[[], list[dict[str, Any]]], logger: logging.Logger
) -> None:
    # A plain logging call through a handler with a ProcessorFormatter:
    # the record is shipped as usual.
    formatter_route(logger)
    logger.info("plain %s", "logging", extra={"k": 1})
    (frame,) = shipped()
    assert frame["message"] == "plain logging"
    assert frame["k"] == 1
