"""``TimberFormatter``: each record as one line of JSON, the same frame the
handler sends, for shipping logs from stdout."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from timber import _engine
from timber.context import TimberContext, resolve

__all__ = ["Formatter", "TimberFormatter"]


class TimberFormatter(logging.Formatter):
    """Formats records as Timber JSON frames, one object per line.

    ``json_default`` is called for values JSON has no type for, as with
    ``json.dumps(default=...)``; ``json_encoder`` (a ``json.JSONEncoder``
    subclass) encodes the frame instead of the built-in encoder. Either takes
    precedence over timber's own conversion, which still applies when they
    fail. ``include_extra_attributes`` and ``redact`` are read as the
    handler reads them (``redact`` as a list or one text of names separated
    by commas, ``TIMBER_REDACT`` when not given); redaction applies to what
    the encoder wrote.
    """

    def __init__(
        self,
        context: TimberContext | None = None,
        json_default: Callable[[Any], Any] | None = None,
        json_encoder: type[json.JSONEncoder] | None = None,
        *args: Any,
        include_extra_attributes: bool = True,
        redact: Iterable[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        if any(isinstance(a, str) for a in (context, json_default, json_encoder)):
            # dictConfig's 'class' form calls Formatter(fmt, datefmt, style):
            # those land here positionally. timber ignores fmt; keep them for
            # logging.Formatter.
            args = (context, json_default, json_encoder or "%", *args)
            context = json_default = json_encoder = None
        super().__init__(*args, **kwargs)
        self.context = resolve(context)
        self.json_default = json_default
        self.json_encoder = json_encoder
        self.include_extra_attributes = include_extra_attributes
        var, global_context = self.context._sources()
        options = {"include_extra_attributes": include_extra_attributes, "redact": redact}
        self._format = _engine.JsonFormat(var, global_context, options, json_default)

    def format(self, record: logging.LogRecord) -> str:
        if self.json_encoder is not None:
            try:
                return self._format_with_encoder(record, self.json_encoder)
            except Exception:
                # The user's encoder failed: timber's own conversion below
                # never loses the record.
                pass
        return self._format(record)

    def _format_with_encoder(
        self, record: logging.LogRecord, encoder: type[json.JSONEncoder]
    ) -> str:
        # The frame as Python objects, each extra the object that was
        # logged: the encoder sees it as it is.
        text = json.dumps(self._format.frame(record), cls=encoder, default=self.json_default)
        # After the encoder, never before: what it wrote is what is redacted.
        return self._format.redacted(text)


Formatter = TimberFormatter
