"""Redis with an in-memory fallback that returns to Redis by itself, losing nothing.

A composition: `RedisBackend` serves while the `Circuit` is closed, and what a fallback would
need (records, admission hits, leases, resumable marks, values) is mirrored into a
`MemoryBackend`. When a call fails or exceeds `REDIS_OP_TIMEOUT_MS`, that call is answered from
memory at once and the circuit opens: later calls go straight to memory, and the `Journal`
notes what memory accepted. When Redis answers again the journal is written back before the
circuit closes. `StorageUnavailable` never leaves this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

from voicegate._retry import Backoff
from voicegate.errors import StorageRecovering, StorageUnavailable
from voicegate.storage.base import (
    Decision,
    Lease,
    LeaseRef,
    RateWindow,
    RedisFigures,
    SessionRecord,
    StateBackend,
    StateListener,
    ValueKind,
)
from voicegate.storage.circuit import Circuit
from voicegate.storage.journal import Journal
from voicegate.storage.memory import MemoryBackend
from voicegate.storage.redis import RedisBackend

__all__ = ["ResilientBackend"]

T = TypeVar("T")
_LAST_WRITE_BACK_SECONDS = 5.0


class _Down(enum.Enum):
    """Redis did not serve this call (the circuit was open, or the call failed and opened it)."""

    DOWN = enum.auto()


DOWN: Final = _Down.DOWN


class ResilientBackend(StateBackend):
    """The backend the gateway uses when `REDIS_ENABLED=true`."""

    name = "redis"

    def __init__(
        self, redis: RedisBackend, *, op_timeout: float, backoff: Backoff, masked_url: str
    ) -> None:
        self.redis = redis
        self.memory = MemoryBackend()
        self.journal = Journal()
        self.circuit = Circuit(
            redis.ping,
            op_timeout=op_timeout,
            backoff=backoff,
            describe_target=masked_url,
            on_reconnect=self._write_back,
        )

    # -- lifecycle and status ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect (one round of retries); on failure, serve from memory and keep trying."""
        await self.circuit.start()

    @property
    def shared(self) -> bool:
        return self.circuit.available

    def add_listener(self, listener: StateListener) -> None:
        self.circuit.add_listener(listener)

    async def figures(self) -> RedisFigures | None:
        """Redis's figures. In fallback too, when the last probe got an answer: an
        out-of-memory Redis answers reads, and its memory is what operators must see."""
        if not (self.circuit.available or self.circuit.reachable):
            return None  # nothing answers: do not wait on it
        try:
            latency = await self.circuit.read("ping", self.redis.ping())
            return RedisFigures.from_info(
                latency, await self.circuit.read("info", self.redis.info())
            )
        except StorageUnavailable:
            return None

    async def ping(self) -> float:
        """Redis's round trip while it serves, else memory's (0.0)."""
        latency = await self._redis("ping", self.redis.ping)
        return await self.memory.ping() if latency is DOWN else latency

    async def close(self) -> None:
        """Stop reconnecting, hand Redis what memory still holds if it answers, close the pool."""
        # 1. Stop the reconnect loop (a write-back in progress keeps what it did not write).
        await self.circuit.close()
        # 2. One last write-back, bounded, so that other instances can resume these sessions.
        if self.journal:
            with contextlib.suppress(StorageUnavailable, TimeoutError):
                async with asyncio.timeout(_LAST_WRITE_BACK_SECONDS):
                    await self.circuit.attempt("ping", self.redis.ping())
                    await self._write_back()
        # 3. Close the pool.
        await self.redis.close()

    # -- session records --------------------------------------------------------------------

    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        found = await self._redis(
            "get_session", lambda: self.redis.get_session(user_id, session_id)
        )
        if found is not DOWN:
            return found
        record = await self.memory.get_session(user_id, session_id)
        if record is not None:
            return record
        # Unknown here; Redis may hold it (written before this process started, or by an
        # instance already back on Redis). "Not found" would be a guess: ask once, bounded.
        await self._unless_redis_holds(
            "get_session", self.redis.get_session(user_id, session_id), unanswered=True
        )
        return None

    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        await self.memory.save_session(record, ttl)
        saved = await self._redis("save_session", lambda: self.redis.save_session(record, ttl))
        if saved is DOWN:
            self.journal.saved(record.user_id, record.session_id)

    async def delete_session(self, user_id: str, session_id: str) -> None:
        await self.memory.delete_session(user_id, session_id)
        deleted = await self._redis(
            "delete_session", lambda: self.redis.delete_session(user_id, session_id)
        )
        if deleted is DOWN:
            self.journal.deleted_session(user_id, session_id)

    # -- rate limit -------------------------------------------------------------------------

    async def hit(self, user_id: str, window: RateWindow) -> Decision:
        member = secrets.token_hex(8)  # the same name in Redis and in the mirror
        decision = await self._redis("hit", lambda: self.redis.hit(user_id, window, member=member))
        if decision is not DOWN:
            if decision.allowed:
                self.memory.record_hits(user_id, [(time.time() * 1000, member)])
            return decision
        self.journal.hit(user_id, window)
        return await self.memory.hit(user_id, window)

    async def reset(self, user_id: str) -> None:
        await self.memory.reset(user_id)
        if await self._redis("reset", lambda: self.redis.reset(user_id)) is DOWN:
            self.journal.reset(user_id)

    # -- admission, leases and resume -------------------------------------------------------

    async def admit(
        self, record: SessionRecord, window: RateWindow, ttl: int, lease: Lease
    ) -> Decision:
        decision = await self._redis("admit", lambda: self.redis.admit(record, window, ttl, lease))
        if decision is not DOWN:
            if decision.allowed:  # mirror, so that a fallback still knows all of it
                self.memory.adopt(record, ttl, lease)
                self.memory.record_hits(record.user_id, [(time.time() * 1000, record.session_id)])
            return decision
        decision = await self.memory.admit(record, window, ttl, lease)
        if decision.allowed:
            self.journal.claimed(record.user_id, record.session_id, lease)
            self.journal.hit(record.user_id, window)
        return decision

    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        await self.memory.cancel_admission(user_id, session_id)
        cancelled = await self._redis(
            "cancel_admission", lambda: self.redis.cancel_admission(user_id, session_id)
        )
        if cancelled is DOWN:
            self.journal.cancelled_admission(user_id, session_id)

    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        result = await self._redis(
            "claim", lambda: self.redis.claim(user_id, session_id, ttl, lease)
        )
        if result is not DOWN:
            return self._mirror_claim(result, ttl, lease)
        result = await self.memory.claim(user_id, session_id, ttl, lease)
        if isinstance(result, SessionRecord):  # Redis must learn of this record and owner
            self.journal.claimed(user_id, session_id, lease)
        return result

    async def claim_latest(
        self, user_id: str, ttl: int, lease: Lease, *, grace: float, stale_after: float
    ) -> SessionRecord | Decision | None:
        result = await self._redis(
            "claim_latest",
            lambda: self.redis.claim_latest(
                user_id, ttl, lease, grace=grace, stale_after=stale_after
            ),
        )
        if result is not DOWN:
            return self._mirror_claim(result, ttl, lease)
        result = await self.memory.claim_latest(
            user_id, ttl, lease, grace=grace, stale_after=stale_after
        )
        if isinstance(result, SessionRecord):
            self.journal.claimed(user_id, result.session_id, lease)
        elif result is None:
            # A detached session only Redis knows must not become a new session because of a
            # blip; while Redis does not answer at all, voice goes on with a new one.
            await self._unless_redis_holds(
                "has_resumable", self.redis.has_resumable(user_id), unanswered=False
            )
        return result

    async def renew_many(self, leases: Sequence[LeaseRef]) -> list[bool]:
        renewed = await self._redis("renew_many", lambda: self.redis.renew_many(leases))
        if renewed is DOWN:
            renewed = await self.memory.renew_many(leases)
            for ref, kept in zip(leases, renewed, strict=True):
                if kept and self.memory.last_alive(ref.user_id, ref.session_id) is not None:
                    self.journal.marked(ref.user_id, ref.session_id)
            return renewed
        for ref, kept in zip(leases, renewed, strict=True):
            if kept:
                self.memory.take_lease(ref.user_id, ref.session_id, ref.lease)
                self.memory.mark_alive(ref.user_id, ref.session_id, only_if_marked=True)
        return renewed

    async def release(
        self, user_id: str, session_id: str, connection_id: str, *, resumable: bool
    ) -> None:
        await self.memory.release(user_id, session_id, connection_id, resumable=resumable)
        released = await self._redis(
            "release",
            lambda: self.redis.release(user_id, session_id, connection_id, resumable=resumable),
        )
        if released is DOWN:
            self.journal.released(user_id, session_id, connection_id, resumable)

    def _mirror_claim(
        self, result: SessionRecord | Decision | None, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        if isinstance(result, SessionRecord):
            self.memory.adopt(result, ttl, lease)
        return result

    # -- small values -----------------------------------------------------------------------

    async def get_value(self, kind: ValueKind, key: str) -> str | None:
        if self.circuit.available:
            value = await self._redis("get_value", lambda: self.redis.get_value(kind, key))
            return await self.memory.get_value(kind, key) if value is DOWN else value
        found = await self.memory.get_value(kind, key)
        if found is not None:
            return found
        # Set by another instance (a secret minted there): Redis may still answer reads.
        with contextlib.suppress(StorageUnavailable):
            return await self.circuit.attempt("get_value", self.redis.get_value(kind, key))
        return None

    async def set_value(self, kind: ValueKind, key: str, value: str, ttl: int) -> None:
        await self.memory.set_value(kind, key, value, ttl)
        stored = await self._redis("set_value", lambda: self.redis.set_value(kind, key, value, ttl))
        if stored is DOWN:
            self.journal.value_set(kind, key)

    # -- routing ----------------------------------------------------------------------------

    async def _redis(self, label: str, operation: Callable[[], Awaitable[T]]) -> T | _Down:
        """`operation` on Redis while the circuit is closed; DOWN when it is open (then
        nothing awaits: the memory call and its journal entry follow with nothing in between)
        or when the call fails (which opens it)."""
        if not self.circuit.available:
            return DOWN
        try:
            return await self.circuit.call(label, operation())
        except StorageUnavailable:
            return DOWN

    async def _unless_redis_holds(
        self, label: str, holds: Awaitable[object], *, unanswered: bool
    ) -> None:
        """Raise StorageRecovering (the client is told to retry shortly) when Redis, asked once
        within the op timeout, holds what memory does not; `unanswered` says whether Redis not
        answering means the same."""
        try:
            held = await self.circuit.attempt(label, holds)
        except StorageUnavailable:
            if unanswered:
                raise StorageRecovering("Redis does not answer; retry shortly") from None
            return
        if held:
            self.circuit.nudge()  # Redis answers: reconnect now rather than after the backoff
            raise StorageRecovering(
                "serving from memory until Redis's state is merged; retry shortly"
            )

    async def _write_back(self) -> None:
        await self.journal.write_back(self.redis, self.memory, call=self.circuit.attempt)
