"""Fields from another library's event, made safe to set on a
``logging.LogRecord`` as ``extra=`` does."""

from __future__ import annotations

import logging
from typing import Any

#: Names ``Logger.makeRecord`` refuses in ``extra`` (it raises KeyError).
RESERVED = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime"}
)


def safe_extra(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with each name ``logging`` reserves renamed ``extra_<name>``
    (with a leading ``_`` more while that name is taken too), the way timber
    renames extras named like frame fields."""
    extra: dict[str, Any] = {}
    for key, value in fields.items():
        key = str(key)
        if key in RESERVED:
            renamed = "extra_" + key
            while renamed in fields or renamed in extra or renamed in RESERVED:
                renamed = "_" + renamed
            key = renamed
        extra[key] = value
    return extra
