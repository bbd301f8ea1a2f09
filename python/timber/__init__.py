"""timber: structured Python logs, shipped fast by a Rust engine.

>>> import logging, timber
>>> logger = logging.getLogger(__name__)
>>> logger.addHandler(timber.TimberHandler(source_id="...", api_key="..."))
>>> with timber.context(user={"id": 123}):
...     logger.info("Order placed", extra={"order_placed": {"id": 1234}})
"""

from timber._engine import __version__
from timber.context import TimberContext

#: The default context, used by every handler and formatter not given another.
context = TimberContext()

from timber.formatter import Formatter, TimberFormatter  # noqa: E402
from timber.handler import (  # noqa: E402
    DeliveryError,
    TimberHandler,
    TimberQueueHandler,
    UnknownOptionError,
)

__all__ = [
    "DeliveryError",
    "Formatter",
    "TimberContext",
    "TimberFormatter",
    "TimberHandler",
    "TimberQueueHandler",
    "UnknownOptionError",
    "__version__",
    "context",
]
