"""Admission of voice connections, the registry of live ones, and draining on restart.

Admission follows contract §4, in order: feature flag, token, plan, resume ownership, rate
limit (with the concurrency cap), upstream. Every refusal is an `AdmissionError` carrying the
close code and reason that the endpoint sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from voicegate.auth.tokens import Identity, TokenVerifier
from voicegate.config import Settings
from voicegate.engines import Engine, EngineConfig, EngineSession
from voicegate.errors import AdmissionError, AuthError, UpstreamRejected, UpstreamUnavailable
from voicegate.ops.metrics import (
    SESSIONS_ADMITTED,
    SESSIONS_REJECTED,
    SESSIONS_RESUMED,
    UPSTREAM_CONNECTS,
    UPSTREAM_FAILURES,
)
from voicegate.storage import Decision, Lease, MemoryBackend, ResilientBackend, SessionRecord
from voicegate.voice.protocol import apply_preferences

log = logging.getLogger("voicegate.admission")
T = TypeVar("T")

SESSION_NOT_FOUND = "Session not found or expired"
DRAINING = "Server restarting, reconnect with your session_id"

# A connection's lease on its session: renewed every HEARTBEAT seconds, lapses after LEASE.
LEASE_SECONDS = 15.0
HEARTBEAT_SECONDS = 2.0
# How long an admission at the concurrency cap waits for a slot that is being given back.
CONCURRENCY_GRACE_SECONDS = 1.0


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
        self.connections: dict[str, LiveConnection] = {}
        self._admitting = 0  # admissions in progress, which a drain waits for
        self._no_admissions = asyncio.Event()
        self._no_admissions.set()
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
            raise self._refuse("draining", 1001, DRAINING)
        try:
            identity = self.verifier.verify(token)
        except AuthError as exc:
            raise self._refuse("auth", 4001, str(exc)) from None
        if identity.plan.lower() not in settings.voice_allowed_plans:
            allowed = ", ".join(sorted(p.capitalize() for p in settings.voice_allowed_plans))
            raise self._refuse("plan", 4003, f"Voice requires one of these plans: {allowed}")
        lease = Lease(uuid.uuid4().hex, LEASE_SECONDS, settings.voice_max_concurrent_per_user)
        self._admitting += 1
        self._no_admissions.clear()
        try:
            if session_id:
                return await self._resume(identity, session_id, lease)
            return await self._start(identity, lease)
        finally:
            self._admitting -= 1
            if not self._admitting:
                self._no_admissions.set()

    async def _resume(self, identity: Identity, session_id: str, lease: Lease) -> Admitted:
        """Resume: the engine is connected before the lease is taken, so a resume that cannot
        reach the engine leaves the connection that holds the session alone."""
        ttl = self.settings.session_ttl_seconds
        stored = await self.storage.get_session(identity.user_id, session_id)
        if stored is None:
            raise self._refuse("session_not_found", 4004, SESSION_NOT_FOUND)
        engine = await self._open_engine(stored)
        claimed = await self._within_grace(
            lambda: self.storage.claim(identity.user_id, session_id, ttl, lease)
        )
        if not isinstance(claimed, SessionRecord):
            await engine.close()
            if claimed is None:  # expired in the meantime
                raise self._refuse("session_not_found", 4004, SESSION_NOT_FOUND)
            raise self._concurrency_refusal()
        SESSIONS_RESUMED.inc()
        return Admitted(identity, claimed, lease, engine, resumed=True)

    async def _start(self, identity: Identity, lease: Lease) -> Admitted:
        """A new session: rate limit, cap, record and lease at once; refunded if the engine
        cannot be reached, so a session that never started costs the user nothing."""
        settings = self.settings
        record = SessionRecord(
            session_id=secrets.token_urlsafe(16),
            user_id=identity.user_id,
            email=identity.email,
            plan=identity.plan,
            engine=settings.engine_name,
        )
        limit = settings.voice_rate_limit
        ttl = settings.session_ttl_seconds
        decision = await self._within_grace(lambda: self.storage.admit(record, limit, ttl, lease))
        if decision.refusal == "rate_limit":
            log.warning(
                "⚠️ Rate limit exceeded for user %s: %d/%d",
                identity.user_id, decision.count, decision.limit,
            )  # fmt: skip
            raise self._refuse("rate_limit", 4029, limit.exceeded_reason())
        if decision.refusal == "concurrency":
            raise self._concurrency_refusal()
        try:
            engine = await self._open_engine(record)
        except AdmissionError:
            await self.storage.cancel_admission(record.user_id, record.session_id)
            raise
        SESSIONS_ADMITTED.inc()
        return Admitted(identity, record, lease, engine, resumed=False)

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

    async def _open_engine(self, record: SessionRecord) -> EngineSession:
        """`connect_engine`, its failures turned into the 1011 refusal."""
        try:
            return await self.connect_engine(record)
        except UpstreamRejected as exc:  # a clear reason: the operator has something to fix
            log.error("Voice engine refused the gateway: %s", exc)
            raise self._refuse("upstream", 1011, str(exc)) from None
        except UpstreamUnavailable as exc:  # details (hosts, statuses) stay in the log
            log.warning("Voice engine unavailable: %s", exc)
            raise self._refuse(
                "upstream", 1011, "Voice engine unavailable, try again later"
            ) from None

    @staticmethod
    async def _within_grace(attempt: Callable[[], Awaitable[T]]) -> T:
        """Run an admission step, again for a moment while it meets the concurrency cap.

        A client that closes and reconnects at once can be faster than the server noticing the
        close and giving its lease back; a refused step writes nothing, so it may be retried.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONCURRENCY_GRACE_SECONDS
        while True:
            result = await attempt()
            at_cap = isinstance(result, Decision) and result.refusal == "concurrency"
            if not at_cap or loop.time() >= deadline:
                return result
            await asyncio.sleep(0.05)

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

    def attach(self, session_id: str, connection: LiveConnection) -> None:
        """Register a live connection; an older one of the same session here is taken over."""
        older = self.connections.get(session_id)
        self.connections[session_id] = connection
        if older is not None and older is not connection:
            older.taken_over()

    def detach(self, session_id: str, connection: LiveConnection) -> None:
        if self.connections.get(session_id) is connection:
            del self.connections[session_id]

    async def keep_leases(self) -> None:
        """The heartbeat of every live connection here: one batch of lease renewals per tick
        (one pipeline on Redis). A connection whose session was resumed elsewhere is closed
        with 4409 by the next tick."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            live = list(self.connections.values())
            for connection in live:
                connection.flush_counts()
            if not live:
                continue
            leases = [(c.user_id, c.session_id, c.lease) for c in live]
            try:
                renewed = await self.storage.renew_many(leases)
            except Exception:  # never let one bad tick stop the heartbeat of every session
                log.exception("Lease heartbeat failed; trying again at the next tick")
                continue
            for connection, kept in zip(live, renewed, strict=True):
                if not kept:
                    connection.taken_over()
                elif self.connections.get(connection.session_id) is not connection:
                    # It ended while the tick was on its way, and the renewal brought back the
                    # lease it had just released: give it back again (release checks the owner).
                    await self.storage.release(
                        connection.user_id, connection.session_id, connection.lease.connection_id
                    )

    async def drain(self) -> None:
        """Restart: refuse new sessions, tell every client to reconnect, close them with 1001.

        Bounded by `DRAIN_SECONDS`: what is still open then is closed by the server (1012).
        """
        self.draining = True
        self.ready = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.drain_seconds):
                live = list(self.connections.values())
                if live:
                    log.info("Draining %d voice sessions: clients resume with their session_id",
                             len(live))  # fmt: skip
                await asyncio.gather(*(c.drain() for c in live), return_exceptions=True)
                # Admissions still in progress attach, see `draining` and end themselves.
                await self._no_admissions.wait()
                late = list(self.connections.values())
                await asyncio.gather(*(c.drain() for c in late), return_exceptions=True)


class LiveConnection(Protocol):
    """What the registry needs of a live connection (relay.VoiceConnection)."""

    lease: Lease

    @property
    def user_id(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    def flush_counts(self) -> None:
        """Add what was relayed since the last call to the metrics."""

    def taken_over(self) -> None:
        """A newer connection resumed this session: close with 4409."""

    async def drain(self) -> None:
        """The server restarts: send `gateway.draining`, save, close with 1001."""
