"""Engine conversations read one event at a time, for engine tests."""

from __future__ import annotations

import asyncio
from typing import Any

from voicegate.engines import EngineConversation
from voicegate.errors import UpstreamClosed


class Pulled:
    """A started conversation whose events a test awaits with `receive()`, as text."""

    def __init__(self, conversation: EngineConversation) -> None:
        self.conversation = conversation
        self.paused: list[bool] = []
        self._queue: asyncio.Queue[str | UpstreamClosed] = asyncio.Queue()
        conversation.start(self)

    def __getattr__(self, name: str) -> Any:  # `items`, `config`, `history` of the local one
        return getattr(self.conversation, name)

    # EngineEvents
    def on_engine_event(self, event: bytes | memoryview) -> None:
        self._queue.put_nowait(bytes(event).decode())

    def on_engine_closed(self, error: UpstreamClosed) -> None:
        self._queue.put_nowait(error)

    def on_engine_backpressure(self, paused: bool) -> None:
        self.paused.append(paused)

    async def receive(self) -> str:
        """The next event; `UpstreamClosed` once the conversation ended (every time after)."""
        item = await self._queue.get()
        if isinstance(item, UpstreamClosed):
            self._queue.put_nowait(item)
            raise item
        return item

    async def send(self, event: str) -> None:
        self.conversation.send(event)

    async def close(self) -> None:
        await self.conversation.close()
        self._queue.put_nowait(UpstreamClosed("closed by the test", 1000))
