"""Type stubs of the Rust extension ``timber._engine``."""

import logging
from collections.abc import Callable
from typing import Any, final

__all__ = [
    "Engine",
    "JsonFormat",
    "Snapshot",
    "__version__",
    "collect_main",
    "format_json",
    "record_extras",
]
__version__: str

@final
class Snapshot:
    def __new__(cls, data: dict[str, Any], parent: Snapshot | None = None) -> Snapshot: ...
    @property
    def data(self) -> dict[str, Any]: ...
    @property
    def parent(self) -> Snapshot | None: ...

@final
class Engine:
    def __new__(
        cls,
        *,
        url: str,
        api_key: str,
        context: Any,
        buffer_capacity: int,
        flush_interval: float,
        max_buffer_bytes: int,
        max_buffer_records: int,
        drop_extra_events: bool,
        retry_timeout: float,
        timeout: float,
        max_in_flight: int,
        include_extra_attributes: bool,
        raise_exceptions: bool,
        compression: str = "gzip",
        ca_bundle: str | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        spool_dir: str | None = None,
        spool_max_bytes: int = 268435456,
    ) -> Engine: ...
    def emit(self, record: logging.LogRecord) -> None: ...
    def flush(self, timeout: float) -> bool: ...
    def close(self, timeout: float) -> bool: ...
    def stats(self) -> dict[str, Any]: ...
    @property
    def dropcount(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def abandon(self) -> None: ...

@final
class JsonFormat:
    def __new__(
        cls,
        context: Any,
        include_extra_attributes: bool = True,
        json_default: Callable[[Any], Any] | None = None,
    ) -> JsonFormat: ...
    def __call__(self, record: logging.LogRecord) -> str: ...

def format_json(
    record: logging.LogRecord,
    context: Any,
    include_extra_attributes: bool = True,
    json_default: Callable[[Any], Any] | None = None,
    extras: bool = True,
) -> str: ...
def record_extras(
    record: logging.LogRecord, include_extra_attributes: bool = True
) -> list[tuple[str, Any]]: ...
def collect_main(argv: list[str]) -> int: ...
