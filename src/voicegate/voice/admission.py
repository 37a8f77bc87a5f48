"""Admission of a voice connection (contract §4), in order: feature flag, credential, plan,
resume ownership, rate limit (with the concurrency cap), upstream.

Every refusal is an `AdmissionError` carrying the close code and reason the client gets, and is
counted by reason. A new session's rate limit, cap, record and lease are one storage call; a
session whose engine cannot be reached is refunded, so it costs the user nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from voicegate.auth import Authenticator, Identity
from voicegate.errors import (
    AdmissionError,
    AuthError,
    PlanUnavailable,
    StorageRecovering,
    UpstreamRejected,
    UpstreamUnavailable,
)
from voicegate.ops.metrics import SESSIONS_ADMITTED, SESSIONS_REJECTED, SESSIONS_RESUMED
from voicegate.storage import Decision, Lease, SessionRecord
from voicegate.voice.engine_link import EngineLink, failure_reason

if TYPE_CHECKING:
    from voicegate.config import Settings
    from voicegate.engines import Engine, EngineConfig
    from voicegate.storage import StateBackend
    from voicegate.voice.transport import ClientHello

__all__ = ["LEASE_SECONDS", "Admission", "Admitted"]

log = logging.getLogger("voicegate.admission")
T = TypeVar("T")

SESSION_NOT_FOUND = "Session not found or expired"
DRAINING = "Server restarting, reconnect with your session_id"
# A connection's lease on its session: renewed every heartbeat (registry.HEARTBEAT_SECONDS),
# lapses after LEASE_SECONDS without. A lease not renewed for STALE_SECONDS belongs to a
# connection presumed dead (its instance crashed): a resume without session_id may take it.
LEASE_SECONDS = 10.0
STALE_SECONDS = 1.6
# How long an admission at the concurrency cap waits for a slot that is being given back.
CONCURRENCY_GRACE_SECONDS = 1.0


class _ServerState(Protocol):
    @property
    def draining(self) -> bool: ...


@dataclass(slots=True)
class Admitted:
    """A connection that passed admission: its identity, record, lease and open engine link."""

    identity: Identity
    record: SessionRecord
    lease: Lease
    link: EngineLink
    resumed: bool


class Admission:
    """Decides whether a connection becomes a voice session, and which one."""

    def __init__(
        self,
        settings: Settings,
        storage: StateBackend,
        authenticator: Authenticator,
        engine: Engine,
        base_config: EngineConfig,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.authenticator = authenticator
        self.engine = engine
        self.base_config = base_config
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until no admission is in progress (a drain waits for them)."""
        await self._idle.wait()

    async def admit(self, hello: ClientHello, server: _ServerState) -> Admitted:
        """Run admission; raises `AdmissionError` with the close code and reason."""
        settings = self.settings
        if not settings.enable_voice_realtime:
            raise _refuse("feature_disabled", 1008, "Voice realtime feature disabled")
        if server.draining:
            raise _refuse("draining", 1001, DRAINING)
        self._in_flight += 1
        self._idle.clear()
        try:
            identity = await self._identify(hello.credential)
            if identity.plan.lower() not in settings.voice_allowed_plans:
                allowed = ", ".join(sorted(p.capitalize() for p in settings.voice_allowed_plans))
                raise _refuse("plan", 4003, f"Voice requires one of these plans: {allowed}")
            lease = Lease(uuid.uuid4().hex, LEASE_SECONDS, settings.voice_max_concurrent_per_user)
            session_id = hello.query.get("session_id")
            if session_id:
                return await self._resume(identity, session_id, lease)
            if settings.voice_resume_grace_seconds > 0:
                resumed = await self._resume_latest(identity, lease)
                if resumed is not None:
                    return resumed
            return await self._start(identity, lease)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _identify(self, credential: str | None) -> Identity:
        try:
            return await self.authenticator.identify(credential)
        except AuthError as exc:
            raise _refuse("auth", 4001, str(exc)) from None
        except PlanUnavailable as exc:
            log.error("Plan lookup failed: %s", exc)
            raise _refuse("plan_lookup", 1011, "Plan service unavailable") from None

    async def _resume(self, identity: Identity, session_id: str, lease: Lease) -> Admitted:
        """Resume by id: the engine is connected before the lease is taken, so a resume that
        cannot reach the engine leaves the connection that holds the session alone."""
        try:
            stored = await self.storage.get_session(identity.user_id, session_id)
        except StorageRecovering:
            raise _refuse("recovering", 1013, "Try again later") from None
        if stored is None:
            raise _refuse("session_not_found", 4004, SESSION_NOT_FOUND)
        link = await self._open_engine(stored)
        ttl = self.settings.session_ttl_seconds
        claimed = await _within_grace(
            lambda: self.storage.claim(identity.user_id, session_id, ttl, lease)
        )
        if not isinstance(claimed, SessionRecord):
            await link.close()
            if claimed is None:  # expired in the meantime
                raise _refuse("session_not_found", 4004, SESSION_NOT_FOUND)
            raise self._concurrency_refusal()
        link.record = claimed
        SESSIONS_RESUMED.inc()
        return Admitted(identity, claimed, lease, link, resumed=True)

    async def _resume_latest(self, identity: Identity, lease: Lease) -> Admitted | None:
        """Resume without session_id: the user's most recent session whose connection was lost
        without the client closing it, within VOICE_RESUME_GRACE_SECONDS; None if there is none."""
        try:
            claimed = await _within_grace(
                lambda: self.storage.claim_latest(
                    identity.user_id,
                    self.settings.session_ttl_seconds,
                    lease,
                    grace=self.settings.voice_resume_grace_seconds,
                    stale_after=STALE_SECONDS,
                )
            )
        except StorageRecovering:
            raise _refuse("recovering", 1013, "Try again later") from None
        if claimed is None:
            return None
        if isinstance(claimed, Decision):
            raise self._concurrency_refusal()
        try:
            link = await self._open_engine(claimed)
        except AdmissionError:  # keep the session resumable for the next attempt
            await self.storage.release(
                identity.user_id, claimed.session_id, lease.connection_id, resumable=True
            )
            raise
        SESSIONS_RESUMED.inc()
        return Admitted(identity, claimed, lease, link, resumed=True)

    async def _start(self, identity: Identity, lease: Lease) -> Admitted:
        """A new session: rate limit, cap, record and lease at once; refunded if the engine
        cannot be reached."""
        settings = self.settings
        record = SessionRecord(
            session_id=secrets.token_urlsafe(16),
            user_id=identity.user_id,
            email=identity.email,
            plan=identity.plan,
            engine=self.engine.name,
        )
        limit = settings.voice_rate_limit
        ttl = settings.session_ttl_seconds
        decision = await _within_grace(lambda: self.storage.admit(record, limit.window, ttl, lease))
        if decision.refusal == "rate_limit":
            log.warning(
                "⚠️ Rate limit exceeded for user %s: %d/%d",
                identity.user_id,
                decision.count,
                decision.limit,
            )
            raise _refuse("rate_limit", 4029, limit.exceeded_reason())
        if decision.refusal == "concurrency":
            raise self._concurrency_refusal()
        try:
            link = await self._open_engine(record)
        except AdmissionError:
            await self.storage.cancel_admission(record.user_id, record.session_id)
            raise
        SESSIONS_ADMITTED.inc()
        return Admitted(identity, record, lease, link, resumed=False)

    async def _open_engine(self, record: SessionRecord) -> EngineLink:
        link = EngineLink(self.engine, self.base_config, record)
        try:
            await link.open()
        except (UpstreamRejected, UpstreamUnavailable) as exc:
            raise _refuse("upstream", 1011, failure_reason(exc)) from None
        return link

    def _concurrency_refusal(self) -> AdmissionError:
        cap = self.settings.voice_max_concurrent_per_user
        return _refuse(
            "concurrency", 4029, f"Too many concurrent voice sessions ({cap} open max per user)"
        )


def _refuse(reason: str, code: int, message: str) -> AdmissionError:
    SESSIONS_REJECTED.labels(reason).inc()
    return AdmissionError(code, message)


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
