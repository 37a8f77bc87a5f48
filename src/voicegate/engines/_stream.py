"""The local engine's outgoing events: delivered as they are made, held while they cannot be.

Events wait here before the conversation is started and while the client is not reading (the
connection pauses the engine); `reading` lets playback wait too, so a client that reads nothing
costs a bounded amount of memory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any

from voicegate.engines._ga import dumps
from voicegate.engines.base import EngineEvents

__all__ = ["EventStream"]


class EventStream:
    """Server events of one conversation, in order, each with its own `event_id`."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()  # cleared while the client is not reading
        self.reading.set()
        self.closed = False
        self._events: EngineEvents | None = None
        self._pending: deque[bytes] = deque()
        self._ids = itertools.count(1)

    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._flush()

    def pause(self) -> None:
        self.reading.clear()

    def resume(self) -> None:
        self.reading.set()
        self._flush()

    def close(self) -> None:
        self.closed = True
        self._events = None

    def emit(self, kind: str, **fields: Any) -> None:
        if self.closed:
            return
        event_id = f"event_local_{next(self._ids)}"
        event = dumps({"type": kind, "event_id": event_id, **fields}).encode()
        if self._events is not None and self.reading.is_set() and not self._pending:
            self._events.on_engine_event(event)
        else:
            self._pending.append(event)

    def error(self, code: str, message: str, event: dict[str, Any] | None = None) -> None:
        """An `error` event naming the client event at fault (OpenAI's codes, where SDKs know
        them: `item_retrieve_invalid_item_id`, …)."""
        error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if event and isinstance(event.get("event_id"), str):
            error["event_id"] = event["event_id"]
        self.emit("error", error=error)

    def _flush(self) -> None:
        while self._pending and self._events is not None and self.reading.is_set():
            self._events.on_engine_event(self._pending.popleft())
