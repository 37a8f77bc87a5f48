"""The engine side of one voice connection: connecting it, and restoring it with the
conversation replayed when it breaks mid-session.

Admission opens the link (before the connection exists: a resume reaches the engine before it
takes the session over), the connection starts it and sends through it, and asks it to
`reconnect` when the engine goes away. Every connect is counted in the metrics by outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from voicegate.engines import Engine, EngineConfig, EngineConversation, EngineEvents
from voicegate.errors import UpstreamClosed, UpstreamRejected, UpstreamUnavailable
from voicegate.ops.metrics import UPSTREAM_CONNECTS, UPSTREAM_FAILURES, UPSTREAM_RECONNECTS
from voicegate.storage import SessionRecord

__all__ = ["EngineLink", "config_for"]

log = logging.getLogger("voicegate.engine")

_PREFERENCES = (
    "voice",
    "speed",
    "language",
    "turn_detection",
    "instructions",
    "tools",
    "tool_choice",
)


def config_for(base: EngineConfig, preferences: dict[str, Any]) -> EngineConfig:
    """`base` (the server's configuration) with a session's stored preferences applied."""
    changes = {name: preferences[name] for name in _PREFERENCES if name in preferences}
    return replace(base, **changes)


class EngineLink:
    """One connection's engine conversation, configured from its session record."""

    def __init__(self, engine: Engine, base: EngineConfig, record: SessionRecord) -> None:
        self.engine = engine
        self.base = base
        self.record = record
        self.conversation: EngineConversation | None = None

    @property
    def name(self) -> str:
        return self.engine.name

    async def open(self) -> None:
        """Connect, configured from the record, its conversation replayed. Raises
        `UpstreamRejected` or `UpstreamUnavailable` (counted by cause)."""
        config = config_for(self.base, self.record.preferences)
        try:
            self.conversation = await self.engine.connect(config, self.record.conversation)
        except UpstreamRejected:
            UPSTREAM_FAILURES.labels(self.engine.name, "rejected").inc()
            raise
        except UpstreamUnavailable:
            UPSTREAM_FAILURES.labels(self.engine.name, "unavailable").inc()
            raise
        UPSTREAM_CONNECTS.labels(self.engine.name).inc()

    def start(self, events: EngineEvents) -> None:
        """Deliver the conversation's events to `events` (the connection), from now on."""
        assert self.conversation is not None, "open() first"
        self.conversation.start(events)

    async def reconnect(self, events: EngineEvents) -> None:
        """Replace a lost conversation with a new one, the record's conversation replayed."""
        await self.close()
        await self.open()
        UPSTREAM_RECONNECTS.labels(self.engine.name).inc()
        self.start(events)

    def sender(self) -> Callable[[bytes], None]:
        """The open conversation's cheapest way to send (see `EngineConversation.sender`)."""
        assert self.conversation is not None, "open() first"
        return self.conversation.sender()

    def send(self, event: bytes) -> None:
        """Send a GA client event; `UpstreamClosed` when there is no conversation to send to."""
        if self.conversation is None:
            raise UpstreamClosed("no engine conversation", 1006)
        self.conversation.send(event)

    def pause_reading(self) -> None:
        if self.conversation is not None:
            self.conversation.pause_reading()

    def resume_reading(self) -> None:
        if self.conversation is not None:
            self.conversation.resume_reading()

    async def close(self) -> None:
        conversation, self.conversation = self.conversation, None
        if conversation is not None:
            await conversation.close()


def failure_reason(exc: UpstreamRejected | UpstreamUnavailable) -> str:
    """The close reason a client gets when the engine cannot be reached: a refused credential
    says so (the operator has something to fix), anything else stays generic (hosts and
    statuses are in the log)."""
    if isinstance(exc, UpstreamRejected):
        log.error("Voice engine refused the gateway: %s", exc)
        return str(exc)
    log.warning("Voice engine unavailable: %s", exc)
    return "Voice engine unavailable, try again later"
