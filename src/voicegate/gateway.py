"""Admission of voice connections, the registry of live ones, and draining on restart.

Admission follows contract §4, in order: feature flag, token, plan, resume ownership, rate
limit (with the concurrency cap), upstream. Every refusal is an `AdmissionError` carrying the
close code and reason that the endpoint sends.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Protocol

from voicegate.auth import Identity, TokenVerifier
from voicegate.config import Settings
from voicegate.engines import Engine, EngineConfig, EngineSession
from voicegate.errors import AdmissionError, AuthError, UpstreamRejected, UpstreamUnavailable
from voicegate.metrics import (
    SESSIONS_ADMITTED,
    SESSIONS_REJECTED,
    SESSIONS_RESUMED,
    UPSTREAM_CONNECTS,
    UPSTREAM_FAILURES,
)
from voicegate.protocol import apply_preferences
from voicegate.storage import Lease, MemoryBackend, ResilientBackend, SessionRecord

log = logging.getLogger("voicegate.gateway")

# A connection's lease on its session: renewed every HEARTBEAT seconds, lapses after LEASE.
LEASE_SECONDS = 15.0
HEARTBEAT_SECONDS = 2.0


@dataclass(slots=True)
class Admitted:
    """A connection that passed admission: its identity, record, lease and engine session."""

    identity: Identity
    record: SessionRecord
    lease: Lease
    engine: EngineSession
    resumed: bool


class Gateway:
    """What the voice endpoint needs, built once in the app's lifespan."""

    def __init__(
        self,
        settings: Settings,
        storage: MemoryBackend | ResilientBackend,
        engine: Engine,
        verifier: TokenVerifier,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.engine = engine
        self.verifier = verifier
        self.draining = False
        self.ready = False
        # session id -> the live connection on this process (see relay.VoiceConnection)
        self.connections: dict[str, Takeover] = {}
        for cause in ("rejected", "unavailable"):  # series exist from the start, for rate()
            UPSTREAM_FAILURES.labels(engine.name, cause)

    def engine_config(self, record: SessionRecord) -> EngineConfig:
        base = EngineConfig(
            instructions=self.settings.voice_instructions, voice=self.settings.voice_default_voice
        )
        return apply_preferences(base, record.preferences)

    async def admit(self, token: str | None, session_id: str | None) -> Admitted:
        """Run admission; raises `AdmissionError` with the close code and reason."""
        settings = self.settings
        if not settings.enable_voice_realtime:
            raise self._refuse("feature_disabled", 1008, "Voice realtime feature disabled")
        if self.draining:
            raise self._refuse(
                "draining", 1001, "Server restarting, reconnect with your session_id"
            )
        try:
            identity = self.verifier.verify(token)
        except AuthError as exc:
            raise self._refuse("auth", 4001, str(exc)) from None
        if identity.plan.lower() not in settings.voice_allowed_plans:
            allowed = ", ".join(sorted(p.capitalize() for p in settings.voice_allowed_plans))
            raise self._refuse("plan", 4003, f"Voice requires one of these plans: {allowed}")
        lease = Lease(uuid.uuid4().hex, LEASE_SECONDS, settings.voice_max_concurrent_per_user)
        ttl = settings.session_ttl_seconds
        if session_id:
            claimed = await self.storage.claim(identity.user_id, session_id, ttl, lease)
            if claimed is None:
                raise self._refuse("session_not_found", 4004, "Session not found or expired")
            if not isinstance(claimed, SessionRecord):
                raise self._concurrency_refusal()
            record, resumed = claimed, True
        else:
            record = SessionRecord(
                session_id=secrets.token_urlsafe(16),
                user_id=identity.user_id,
                email=identity.email,
                plan=identity.plan,
                engine=settings.engine_name,
            )
            limit = settings.voice_rate_limit
            decision = await self.storage.admit(record, limit, ttl, lease)
            if decision.refusal == "rate_limit":
                log.warning(
                    "⚠️ Rate limit exceeded for user %s: %d/%d",
                    identity.user_id, decision.count, decision.limit,
                )  # fmt: skip
                raise self._refuse("rate_limit", 4029, limit.exceeded_reason())
            if decision.refusal == "concurrency":
                raise self._concurrency_refusal()
            resumed = False
        engine = await self._connect_engine(record, lease, resumed)
        (SESSIONS_RESUMED if resumed else SESSIONS_ADMITTED).inc()
        return Admitted(identity, record, lease, engine, resumed)

    async def connect_engine(self, record: SessionRecord) -> EngineSession:
        """Open an engine conversation configured from `record`, its conversation replayed."""
        name = self.engine.name
        try:
            session = await self.engine.connect(self.engine_config(record), record.conversation)
        except UpstreamRejected:
            UPSTREAM_FAILURES.labels(name, "rejected").inc()
            raise
        except UpstreamUnavailable:
            UPSTREAM_FAILURES.labels(name, "unavailable").inc()
            raise
        UPSTREAM_CONNECTS.labels(name).inc()
        return session

    async def _connect_engine(
        self, record: SessionRecord, lease: Lease, resumed: bool
    ) -> EngineSession:
        try:
            return await self.connect_engine(record)
        except (UpstreamRejected, UpstreamUnavailable) as exc:
            if resumed:  # the session stays resumable; only this connection's lease goes back
                await self.storage.release(record.user_id, record.session_id, lease.connection_id)
            else:  # a session that never started costs the user nothing
                await self.storage.cancel_admission(record.user_id, record.session_id)
            raise self._refuse("upstream", 1011, str(exc)) from None

    def _concurrency_refusal(self) -> AdmissionError:
        cap = self.settings.voice_max_concurrent_per_user
        return self._refuse(
            "concurrency", 4029, f"Too many concurrent voice sessions ({cap} open max per user)"
        )

    @staticmethod
    def _refuse(reason: str, code: int, message: str) -> AdmissionError:
        SESSIONS_REJECTED.labels(reason).inc()
        return AdmissionError(code, message)

    # -- live connections -------------------------------------------------------------------

    def attach(self, session_id: str, connection: Takeover) -> None:
        """Register a live connection; an older one of the same session here is taken over."""
        older = self.connections.get(session_id)
        self.connections[session_id] = connection
        if older is not None and older is not connection:
            older.taken_over()

    def detach(self, session_id: str, connection: Takeover) -> None:
        if self.connections.get(session_id) is connection:
            del self.connections[session_id]

    async def drain(self) -> None:
        """Restart: refuse new sessions, tell every client to reconnect, close them with 1001."""
        self.draining = True
        self.ready = False
        live = list(self.connections.values())
        if live:
            log.info(
                "Draining %d voice sessions: clients reconnect with their session_id", len(live)
            )
        await asyncio.gather(*(c.drain() for c in live), return_exceptions=True)


class Takeover(Protocol):
    """What the registry needs of a live connection (relay.VoiceConnection)."""

    def taken_over(self) -> None:
        """A newer connection resumed this session: close with 4409."""

    async def drain(self) -> None:
        """The server restarts: send `gateway.draining`, save, close with 1001."""
