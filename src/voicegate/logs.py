"""Logging set-up: one line per event, text or JSON, secrets masked in everything written."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from voicegate._redact import mask_text
from voicegate.config import Settings

__all__ = ["configure_logging"]

# Loggers whose records reach our handler; uvicorn's are re-routed here so the access log is
# masked too (it would otherwise print `?token=…`).
_LOGGERS = ("voicegate", "uvicorn", "uvicorn.error", "uvicorn.access")


class _MaskingFormatter(logging.Formatter):
    """Formats a record, then masks every known secret and secret-shaped value in the result."""

    def __init__(self, secrets: tuple[str, ...], json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._secrets = secrets
        self._json = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return mask_text(super().format(record), self._secrets)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("session_id", "user_id", "engine"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return mask_text(json.dumps(entry, ensure_ascii=False), self._secrets)


def configure_logging(settings: Settings) -> None:
    """Route voicegate's and uvicorn's loggers to one masking handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter(settings.secret_values(), settings.log_format == "json"))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name in ("voicegate", "uvicorn") else []
        logger.propagate = name not in ("voicegate", "uvicorn")
        logger.setLevel(settings.log_level)
