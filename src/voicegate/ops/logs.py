"""Logging set-up: one line per event, text or JSON, secrets masked in everything written.

`LOG_FORMAT=text` (the default) writes `time LEVEL logger: message`, the lines of contract §2
included; `LOG_FORMAT=json` writes one JSON object per line with `time`, `level`, `logger`,
`message`, and `session_id`/`user_id`/`engine` when the record carries them, plus `exception`
when it has a traceback. Either way every line passes through `mask_text` with the configured
secrets first.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from voicegate._redact import mask_text
from voicegate.config import Settings

__all__ = ["MaskingFormatter", "configure_logging"]

# Loggers whose records reach our handler; uvicorn's are re-routed here so the access log is
# masked too (it would otherwise print `?token=…`).
_LOGGERS = ("voicegate", "uvicorn", "uvicorn.error", "uvicorn.access")
_CONTEXT = ("session_id", "user_id", "engine")  # `extra=` fields worth a JSON key of their own


class MaskingFormatter(logging.Formatter):
    """Formats a record as text or one JSON line, with every secret and token masked."""

    def __init__(self, secrets: tuple[str, ...], json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._secrets = secrets
        self._json = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return mask_text(self._text(record), self._secrets)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Masked field by field, before encoding: a secret with a quote or a backslash in it
        # would no longer match once JSON has escaped it.
        masked = {
            k: mask_text(v, self._secrets) if isinstance(v, str) else v for k, v in entry.items()
        }
        return json.dumps(masked, ensure_ascii=False, default=str)

    def _text(self, record: logging.LogRecord) -> str:
        """One text line; control characters in its fields are escaped, so a value (a user id
        with a newline, say) cannot forge a line. Only a traceback spans several lines."""
        record.message = record.getMessage().translate(_ESCAPES)
        record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text


# C0 and C1 controls, DEL and the Unicode line separators, as visible escapes.
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)
}


def configure_logging(settings: Settings) -> None:
    """Route voicegate's, uvicorn's and every other logger to one masking handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(settings.secret_values(), settings.log_format == "json"))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name in ("voicegate", "uvicorn") else []
        logger.propagate = name not in ("voicegate", "uvicorn")
        logger.setLevel(settings.log_level)
    # Third-party loggers (redis, websockets, asyncio, …) propagate to the root logger: give it
    # the same handler, from WARNING up, or Python's last-resort handler would print their
    # records unformatted and unmasked.
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
