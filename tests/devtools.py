"""A minimal client of Chromium's DevTools protocol, over the `websockets` library the project
depends on: commands matched to replies by id, every event kept, futures for awaited events."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed


class DevTools:
    """One DevTools WebSocket (the browser's; pages are flat sessions on it)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        command: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        reply = self._replies[command["id"]] = asyncio.get_running_loop().create_future()
        await self._ws.send(json.dumps(command))
        async with asyncio.timeout(60):
            message = await reply
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        result: dict[str, Any] = message["result"]
        return result

    def next_event(self, method: str, session: str | None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next `method` event; ask for it before causing the event."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, future))
        return future

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    reply = self._replies.pop(message["id"], None)
                    if reply is not None and not reply.done():
                        reply.set_result(message)
                    continue
                self.events.append(message)
                for waiter in list(self._waiters):
                    method, session, future = waiter
                    if method == message["method"] and session == message.get("sessionId"):
                        self._waiters.remove(waiter)
                        if not future.done():
                            future.set_result(message)
        except ConnectionClosed:
            pass  # Chromium exiting (Browser.close) drops the socket without a close frame
        finally:
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_exception(ConnectionError("the DevTools connection closed"))
            for _, _, future in self._waiters:
                future.cancel()

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
