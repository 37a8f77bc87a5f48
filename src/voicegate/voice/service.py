"""The voice service: what a transport needs to turn a client into a voice session.

Built once by the app, started and drained by its lifespan. `open` is the whole interface a
transport uses: it gets a `VoiceConnection` back and reports the client's messages to it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from voicegate._tasks import stop_task
from voicegate.engines import Engine, EngineConfig
from voicegate.ops.metrics import UPSTREAM_FAILURES
from voicegate.voice.admission import Admission
from voicegate.voice.connection import VoiceConnection
from voicegate.voice.protocol import ClientPolicy
from voicegate.voice.registry import Registry

if TYPE_CHECKING:
    from voicegate.auth import Authenticator
    from voicegate.config import Settings
    from voicegate.storage import StateBackend
    from voicegate.voice.transport import ClientHello, ClientTransport

__all__ = ["VoiceService"]

log = logging.getLogger("voicegate")


class VoiceService:
    """Admission, the registry of live connections, and the policy clients are held to."""

    def __init__(
        self,
        settings: Settings,
        storage: StateBackend,
        engine: Engine,
        authenticator: Authenticator,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.engine = engine
        self.authenticator = authenticator
        base = EngineConfig(
            instructions=settings.voice_instructions, voice=settings.voice_default_voice
        )
        self.admission = Admission(settings, storage, authenticator, engine, base)
        self.registry = Registry(storage)
        self.policy = ClientPolicy(settings.voice_client_can_set, settings.voice_instructions)
        # Scrubbed from every non-audio event relayed to a client (an upstream error may quote
        # the API key).
        self.relay_secrets = tuple(s.encode() for s in settings.secret_values() if len(s) >= 4)
        self.ready = False
        self.draining = False
        self._heartbeat: asyncio.Task[None] | None = None
        for cause in ("rejected", "unavailable"):  # series exist from the start, for rate()
            UPSTREAM_FAILURES.labels(engine.name, cause)

    def open(self, transport: ClientTransport, hello: ClientHello) -> VoiceConnection:
        """A client connected: admission starts now; its messages wait until it is done."""
        connection = VoiceConnection(self, transport, hello)
        connection.begin()
        return connection

    def start(self) -> None:
        """Start the heartbeat and admit sessions."""
        self._heartbeat = asyncio.create_task(self.registry.heartbeat(), name="heartbeat")
        self.ready = True

    async def drain(self) -> None:
        """Restart: refuse new sessions, tell every client to reconnect, close them with 1001.

        Bounded by DRAIN_SECONDS: what is still open then is closed by the server.
        """
        self.draining = True
        self.ready = False
        await self.registry.drain(self.admission.wait_idle, self.settings.drain_seconds)

    async def close(self) -> None:
        """Stop the heartbeat (the drain left no connection to renew)."""
        await stop_task(self._heartbeat)
