"""Redis with an in-memory fallback that returns to Redis by itself, losing nothing.

While Redis answers, every call goes to Redis and what a fallback would need (records, admission
hits, leases) is mirrored into memory. When a command fails or exceeds `REDIS_OP_TIMEOUT_MS`,
that call is answered from memory at once and the circuit opens: later calls go straight to
memory and a background task reconnects with exponential backoff. What memory accepts meanwhile
is journaled; on reconnection it is merged into Redis (newer records win, hits are a set union)
before the circuit closes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from voicegate._retry import backoff_delay
from voicegate.config import RateLimit, Settings
from voicegate.errors import StorageUnavailable
from voicegate.ops.metrics import REDIS_COMMAND_SECONDS, REDIS_WRITEBACK
from voicegate.storage.base import Decision, Lease, SessionRecord, StateBackend
from voicegate.storage.memory import MemoryBackend
from voicegate.storage.redis import RedisBackend

T = TypeVar("T")
log = logging.getLogger("voicegate.storage")

StateListener = Callable[[bool], None]


@dataclass
class _Journal:
    """What memory accepted while Redis was away, to be written back."""

    sessions: set[tuple[str, str]] = field(default_factory=set)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    cancelled: set[tuple[str, str]] = field(default_factory=set)
    hit_users: set[str] = field(default_factory=set)
    leases: dict[tuple[str, str], Lease] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.sessions or self.deleted or self.cancelled or self.hit_users or self.leases
        )

    def absorb(self, other: _Journal) -> None:
        self.sessions |= other.sessions
        self.deleted |= other.deleted
        self.cancelled |= other.cancelled
        self.hit_users |= other.hit_users
        self.leases = {**self.leases, **other.leases}  # `other` is the newer journal


class ResilientBackend(StateBackend):
    """The backend the service uses when `REDIS_ENABLED=true`."""

    name = "redis"

    def __init__(self, redis: RedisBackend, settings: Settings) -> None:
        self.redis = redis
        self.memory = MemoryBackend()
        self._settings = settings
        self._timeout = settings.redis_op_timeout
        self._available = False
        self._journal = _Journal()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False
        self.listeners: list[StateListener] = []

    @property
    def available(self) -> bool:
        """True while calls go to Redis; False while memory serves them."""
        return self._available

    async def start(self) -> None:
        """Connect once (with the configured retries); on failure, serve from memory."""
        error = await self._connect_round(first_attempt_now=True)
        if error is None:
            self._set_available(True)
        else:
            self._fall_back(error)

    # -- the StateBackend contract ----------------------------------------------------------

    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        return await self._run(lambda b: b.get_session(user_id, session_id))

    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        await self.memory.save_session(record, ttl)
        key = (record.user_id, record.session_id)
        if not await self._on_redis(lambda b: b.save_session(record, ttl)):
            self._journal.sessions.add(key)
            self._journal.deleted.discard(key)

    async def delete_session(self, user_id: str, session_id: str) -> None:
        await self.memory.delete_session(user_id, session_id)
        if not await self._on_redis(lambda b: b.delete_session(user_id, session_id)):
            self._journal.deleted.add((user_id, session_id))
            self._journal.sessions.discard((user_id, session_id))

    async def hit(self, user_id: str, limit: RateLimit) -> Decision:
        decision = await self._run(lambda b: b.hit(user_id, limit), journal_hits_of=user_id)
        return decision

    async def reset(self, user_id: str) -> None:
        await self.memory.reset(user_id)
        await self._on_redis(lambda b: b.reset(user_id))

    async def admit(
        self, record: SessionRecord, limit: RateLimit, ttl: int, lease: Lease
    ) -> Decision:
        if self._available:
            try:
                decision = await self._bounded(self.redis.admit(record, limit, ttl, lease))
            except StorageUnavailable as exc:
                self._fall_back(exc)
            else:
                if decision.allowed:  # mirror, so that a fallback still knows all of it
                    await self.memory.save_session(record, ttl)
                    self.memory.record_hits(
                        record.user_id, [(time.time() * 1000, record.session_id)]
                    )
                    self.memory.take_lease(record.user_id, record.session_id, lease)
                return decision
        decision = await self.memory.admit(record, limit, ttl, lease)
        if decision.allowed:
            key = (record.user_id, record.session_id)
            self._journal.sessions.add(key)
            self._journal.hit_users.add(record.user_id)
            self._journal.leases[key] = lease
        return decision

    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        await self.memory.cancel_admission(user_id, session_id)
        if not await self._on_redis(lambda b: b.cancel_admission(user_id, session_id)):
            key = (user_id, session_id)
            self._journal.cancelled.add(key)
            self._journal.sessions.discard(key)
            self._journal.leases.pop(key, None)

    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        if self._available:
            try:
                result = await self._bounded(self.redis.claim(user_id, session_id, ttl, lease))
            except StorageUnavailable as exc:
                self._fall_back(exc)
            else:
                if isinstance(result, SessionRecord):
                    await self.memory.save_session(result, ttl)
                    self.memory.take_lease(user_id, session_id, lease)
                return result
        result = await self.memory.claim(user_id, session_id, ttl, lease)
        if isinstance(result, SessionRecord):  # Redis must learn of this record and owner
            self._journal.sessions.add((user_id, session_id))
            self._journal.leases[(user_id, session_id)] = lease
        return result

    async def renew(self, user_id: str, session_id: str, lease: Lease) -> bool:
        return await self._run(lambda b: b.renew(user_id, session_id, lease))

    async def renew_many(self, leases: Sequence[tuple[str, str, Lease]]) -> list[bool]:
        return await self._run(lambda b: b.renew_many(leases))

    async def release(self, user_id: str, session_id: str, connection_id: str) -> None:
        await self.memory.release(user_id, session_id, connection_id)
        if not await self._on_redis(lambda b: b.release(user_id, session_id, connection_id)):
            journaled = self._journal.leases.get((user_id, session_id))
            if journaled is not None and journaled.connection_id == connection_id:
                del self._journal.leases[(user_id, session_id)]

    async def ping(self) -> float:
        """Redis's round trip; raises `StorageUnavailable` (and opens the circuit) when down."""
        if not self._available:
            raise StorageUnavailable("Redis unavailable, serving from memory")
        try:
            return await self._bounded(self.redis.ping())
        except StorageUnavailable as exc:
            self._fall_back(exc)
            raise

    async def info(self) -> dict[str, Any]:
        """Redis `INFO`, bounded like every command; raises `StorageUnavailable` when down."""
        if not self._available:
            raise StorageUnavailable("Redis unavailable, serving from memory")
        try:
            return await self._bounded(self.redis.info())
        except StorageUnavailable as exc:
            self._fall_back(exc)
            raise

    async def figures(self) -> tuple[float, dict[str, Any]] | None:
        """A timed PING (ms) and `INFO`, as health and the metrics sampler report them; None
        while memory serves (then nothing is asked of Redis)."""
        if not self._available:
            return None
        try:
            return await self.ping(), await self.info()
        except StorageUnavailable:  # logged, and the circuit is open
            return None

    async def close(self) -> None:
        """Stop reconnecting, hand Redis what memory still holds if it answers, close the pool."""
        self._closed = True
        # 1. Stop the reconnect loop (it may be in the middle of a write-back).
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            await asyncio.gather(self._reconnect_task, return_exceptions=True)
        # 2. One last write-back, so that other instances can resume these sessions.
        if self._journal:
            with contextlib.suppress(StorageUnavailable, TimeoutError):
                async with asyncio.timeout(5):
                    await self._bounded(self.redis.ping())
                    await self._write_back()
        # 3. Close the pool.
        await self.redis.close()

    # -- routing ----------------------------------------------------------------------------

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        # The coroutine's name is the operation (admit, renew, get_session, ping, …): the label.
        command = getattr(awaitable, "__name__", "other")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except TimeoutError:
            raise StorageUnavailable(
                f"no answer within REDIS_OP_TIMEOUT_MS={self._settings.redis_op_timeout_ms}"
            ) from None
        finally:
            REDIS_COMMAND_SECONDS.labels(command).observe(time.perf_counter() - started)

    async def _run(
        self, call: Callable[[StateBackend], Awaitable[T]], journal_hits_of: str | None = None
    ) -> T:
        """Reads and decisions: Redis while available, else memory."""
        if self._available:
            try:
                return await self._bounded(call(self.redis))
            except StorageUnavailable as exc:
                self._fall_back(exc)
        if journal_hits_of is not None:
            self._journal.hit_users.add(journal_hits_of)
        return await call(self.memory)

    async def _on_redis(self, call: Callable[[StateBackend], Awaitable[None]]) -> bool:
        """Writes already applied to memory: also to Redis while available. False if not."""
        if not self._available:
            return False
        try:
            await self._bounded(call(self.redis))
            return True
        except StorageUnavailable as exc:
            self._fall_back(exc)
            return False

    # -- circuit and recovery ---------------------------------------------------------------

    def _set_available(self, available: bool) -> None:
        self._available = available
        if available:
            log.info("✅ Redis connected successfully: %s", self._settings.redis_url_masked)
        for listener in self.listeners:
            listener(available)

    def _fall_back(self, error: Exception) -> None:
        if self._closed:
            return
        if self._available or self._reconnect_task is None:
            log.error("❌ Redis connection failed: %s", error)
            log.warning("⚠️ Falling back to in-memory session storage")
            self._set_available(False)
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.create_task(self._reconnect(), name="redis-reconnect")

    async def _connect_round(
        self, first_attempt_now: bool = False, start: int = 0
    ) -> Exception | None:
        """One round of `RETRY_MAX_ATTEMPTS` attempts; None on success, else the last error."""
        settings = self._settings
        error: Exception | None = None
        for attempt in range(start, start + settings.retry_max_attempts):
            if attempt > start or not first_attempt_now:
                await asyncio.sleep(
                    backoff_delay(attempt, settings.retry_base_delay,
                                  settings.retry_backoff_factor, settings.retry_max_delay)
                )  # fmt: skip
            try:
                await self._bounded(self.redis.ping())
                return None
            except StorageUnavailable as exc:
                error = exc
        return error

    async def _reconnect(self) -> None:
        """Keep trying, round after round, until Redis answers and the write-back is done."""
        attempts = 0
        while not self._closed:
            error = await self._connect_round(start=attempts)
            attempts += self._settings.retry_max_attempts
            if error is None:
                try:
                    await self._write_back()
                except StorageUnavailable as exc:
                    error = exc
                else:
                    self._set_available(True)
                    return
            log.warning(
                "Redis still unreachable after %d attempts, serving from memory: %s",
                attempts, error,
            )  # fmt: skip

    async def _write_back(self) -> None:
        """Merge what memory accepted during the outage into Redis, until nothing is left.

        The last pass ends without awaiting, so no call can slip into memory unjournaled
        between the final merge and the switch back to Redis.
        """
        ttl = self._settings.session_ttl_seconds
        window = self._settings.voice_rate_limit.window_seconds
        merged = 0
        while self._journal:
            batch, self._journal = self._journal, _Journal()
            try:
                for user_id, session_id in batch.sessions:
                    record = await self.memory.get_session(user_id, session_id)
                    if record is not None:
                        await self._bounded(self.redis.merge(user_id, record, [], ttl, window))
                        merged += 1
                for user_id, session_id in batch.deleted:
                    await self._bounded(self.redis.delete_session(user_id, session_id))
                for user_id, session_id in batch.cancelled:
                    await self._bounded(self.redis.cancel_admission(user_id, session_id))
                for (user_id, session_id), lease in batch.leases.items():
                    await self._bounded(self.redis.force_lease(user_id, session_id, lease))
                for user_id in batch.hit_users:
                    hits = self.memory.hits_of(user_id)
                    await self._bounded(self.redis.merge(user_id, None, hits, ttl, window))
                    merged += len(hits)
            except BaseException:  # unavailable, or cancelled by close(): keep what is left
                batch.absorb(self._journal)
                self._journal = batch
                raise
        if merged:
            REDIS_WRITEBACK.inc(merged)
            log.info("Redis write-back done: %d records and hits merged", merged)
