"""Type stubs of the Rust extension ``timber._engine``."""

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, final

__all__ = [
    "Engine",
    "GlobalContext",
    "JsonFormat",
    "Snapshot",
    "__version__",
    "collect",
    "declared",
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
class GlobalContext:
    def __new__(cls) -> GlobalContext: ...
    def get(self) -> Snapshot | None: ...
    def set(self, snapshot: Snapshot | None = None) -> None: ...

@final
class Engine:
    def __new__(
        cls,
        options: dict[str, Any],
        context_var: ContextVar[Snapshot | None],
        global_context: GlobalContext,
    ) -> Engine: ...
    def emit(self, record: logging.LogRecord) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def close(self, timeout: float | None = None) -> bool: ...
    def end_waits(self, timeout: float | None = None) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def settings(self) -> dict[str, Any]: ...
    @property
    def raise_exceptions(self) -> bool: ...
    @raise_exceptions.setter
    def raise_exceptions(self, value: bool) -> None: ...
    @property
    def dropcount(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def abandon(self) -> None: ...

@final
class JsonFormat:
    def __new__(
        cls,
        context_var: ContextVar[Snapshot | None],
        global_context: GlobalContext,
        include_extra_attributes: bool = True,
        json_default: Callable[[Any], Any] | None = None,
    ) -> JsonFormat: ...
    def __call__(self, record: logging.LogRecord) -> str: ...
    def frame(self, record: logging.LogRecord) -> Any: ...

def declared() -> list[tuple[str, Any, list[str], str]]: ...
def collect(
    listen: str,
    out: str,
    api_key: str | None = None,
    max_body: int = 10485760,
    fsync: bool = False,
    quiet: bool = False,
) -> None: ...
