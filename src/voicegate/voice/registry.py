"""The live voice connections of this process, their one heartbeat, and the drain.

One heartbeat task serves every connection: each tick it flushes the relay counters to the
metrics, pings clients that went quiet (and drops those that stay silent: their session stays
resumable), and renews every lease in one storage call (one pipeline on Redis). A connection
whose session was resumed by a newer connection, here or on another instance, learns it from
that renewal and is closed with 4409.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from voicegate.storage import LeaseRef

if TYPE_CHECKING:
    from voicegate.storage import StateBackend
    from voicegate.voice.connection import VoiceConnection

__all__ = ["HEARTBEAT_SECONDS", "Registry"]

log = logging.getLogger("voicegate.registry")

HEARTBEAT_SECONDS = 1.0
PING_AFTER_TICKS = 20  # a client silent this long is pinged …
DROP_AFTER_TICKS = 40  # … and dropped if it is still silent this long


class Registry:
    """Session id → the live connection that holds it on this process."""

    def __init__(self, storage: StateBackend) -> None:
        self.storage = storage
        self.connections: dict[str, VoiceConnection] = {}

    def attach(self, connection: VoiceConnection) -> None:
        """Register a live connection; an older one of the same session here is taken over."""
        older = self.connections.get(connection.session_id)
        self.connections[connection.session_id] = connection
        if older is not None and older is not connection:
            older.taken_over()

    def detach(self, connection: VoiceConnection) -> None:
        if self.connections.get(connection.session_id) is connection:
            del self.connections[connection.session_id]

    async def heartbeat(self) -> None:
        """Tick until cancelled (the app's lifespan cancels it at shutdown)."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.tick()
            except Exception:  # never let one bad tick stop the heartbeat of every session
                log.exception("Heartbeat failed; trying again at the next tick")

    async def tick(self) -> None:
        live = list(self.connections.values())
        for connection in live:
            connection.flush_counts()
            _keepalive(connection)
        if not live:
            return
        renewed = await self.storage.renew_many(
            [LeaseRef(c.user_id, c.session_id, c.lease) for c in live if c.lease is not None]
        )
        for connection, kept in zip(live, renewed, strict=True):
            if not kept:
                connection.taken_over()
            elif self.connections.get(connection.session_id) is not connection:
                # It ended while the tick was on its way, and the renewal brought back the
                # lease it had just released: give it back again (release checks the owner).
                assert connection.lease is not None
                await self.storage.release(
                    connection.user_id,
                    connection.session_id,
                    connection.lease.connection_id,
                    resumable=connection.leaves_resumable,
                )

    async def drain(self, admissions: Callable[[], Awaitable[None]], seconds: float) -> None:
        """Tell every client to reconnect and close them with 1001, admissions in flight
        included; bounded by `seconds` (what is still open then is closed by the server)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                live = list(self.connections.values())
                if live:
                    log.info("Draining %d voice sessions: clients resume their session", len(live))
                await asyncio.gather(*(c.drain() for c in live), return_exceptions=True)
                await admissions()  # in flight: they attach, see the drain and end themselves
                late = list(self.connections.values())
                await asyncio.gather(*(c.drain() for c in late), return_exceptions=True)


def _keepalive(connection: VoiceConnection) -> None:
    if connection.seen:
        connection.seen = False
        connection.idle_ticks = 0
        return
    connection.idle_ticks += 1
    if connection.idle_ticks == PING_AFTER_TICKS:
        connection.transport.ping()
    elif connection.idle_ticks >= DROP_AFTER_TICKS:
        connection.on_transport_lost()
