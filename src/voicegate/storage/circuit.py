"""The circuit breaker in front of Redis: is it serving calls now, and the way back when not.

Closed (available): calls go through, each bounded by `REDIS_OP_TIMEOUT_MS`. The first failure
opens it: the caller answers from memory, operators read `❌ Redis connection failed: …` and
`⚠️ Falling back to in-memory session storage` (once per outage), and a background task probes
Redis in rounds of `RETRY_MAX_ATTEMPTS` with exponential backoff. When a probe answers, the
`on_reconnect` hook (the write-back) runs, then the circuit closes and says
`✅ Redis connected successfully: …` again.

Nothing here knows Redis: the probe is any async callable, so the states are tested alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from voicegate._retry import Backoff
from voicegate._tasks import stop_task
from voicegate.errors import StorageUnavailable
from voicegate.ops.metrics import REDIS_COMMAND_SECONDS, REDIS_ERRORS, REDIS_FALLBACKS

__all__ = ["Circuit"]

T = TypeVar("T")
log = logging.getLogger("voicegate.storage")


class Circuit:
    """Whether Redis serves calls, the bound on each call, and the reconnect loop."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[Any]],
        *,
        op_timeout: float,
        backoff: Backoff,
        describe_target: str,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.op_timeout = op_timeout
        self._probe = probe
        self._backoff = backoff
        self._target = describe_target  # masked: it goes to the log
        self._on_reconnect = on_reconnect
        self._available = False
        self._reachable = False
        self._in_outage = False
        self._closed = False
        self._listeners: list[Callable[[bool], None]] = []
        self._reconnecting: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def available(self) -> bool:
        """True while calls go to Redis (the circuit is closed)."""
        return self._available

    @property
    def reachable(self) -> bool:
        """True when the last probe got an answer, even if the write-back after it failed (an
        out-of-memory Redis answers PING and INFO but refuses writes)."""
        return self._reachable

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(available)` at every change."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """One round of probes, the first at once: closed when one answers, else open."""
        error = await self._round(0, first_now=True)
        if error is None:
            self._close_circuit()
        else:
            self.open(error)

    async def call(self, label: str, awaitable: Awaitable[T]) -> T:
        """Await a Redis operation while the circuit is closed; a failure opens it and raises
        `StorageUnavailable` (at once, without awaiting, when it is already open)."""
        if not self._available:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never awaited, and never a warning about it
            raise StorageUnavailable("Redis unavailable, serving from memory")
        try:
            return await self.attempt(label, awaitable)
        except StorageUnavailable as exc:
            self.open(exc)
            raise

    async def attempt(self, label: str, awaitable: Awaitable[T]) -> T:
        """Await a Redis operation bounded by the op timeout, timed under `label` in
        `voicegate_redis_command_seconds`; the circuit's state is left as it is."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.op_timeout):
                return await awaitable
        except TimeoutError:
            REDIS_ERRORS.inc()
            ms = self.op_timeout * 1000
            raise StorageUnavailable(f"no answer within REDIS_OP_TIMEOUT_MS ({ms:g} ms)") from None
        except StorageUnavailable:
            REDIS_ERRORS.inc()
            raise
        finally:
            REDIS_COMMAND_SECONDS.labels(label).observe(time.perf_counter() - started)

    async def read(self, label: str, awaitable: Awaitable[T]) -> T:
        """`call` while the circuit is closed, `attempt` while it is open: a read made during
        an outage never changes the circuit's state."""
        if self._available:
            return await self.call(label, awaitable)
        return await self.attempt(label, awaitable)

    def open(self, error: BaseException) -> None:
        """Serve from memory from now on, and reconnect in the background."""
        if self._closed:
            return
        if not self._in_outage:
            log.error("❌ Redis connection failed: %s", error)
            log.warning("⚠️ Falling back to in-memory session storage")
            REDIS_FALLBACKS.inc()
            self._in_outage = True
            self._reachable = False
            self._set_available(False)
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._reconnect(), name="redis-reconnect")

    def nudge(self) -> None:
        """Redis answered after all: probe now instead of at the end of the current backoff."""
        self._wake.set()

    async def close(self) -> None:
        """Stop reconnecting (a write-back in progress is cancelled and keeps what is left)."""
        self._closed = True
        await stop_task(self._reconnecting)

    async def _reconnect(self) -> None:
        """Round after round until Redis answers and the reconnect hook succeeds."""
        attempts = 0
        while not self._closed:
            error = await self._round(attempts)
            attempts += self._backoff.attempts
            if error is None:
                try:
                    if self._on_reconnect is not None:
                        await self._on_reconnect()
                except StorageUnavailable as exc:
                    log.warning(
                        "Redis answers but the write-back failed, serving from memory: %s", exc
                    )
                    continue
                # No await between the hook's end and the switch: a call answered from memory
                # meanwhile would be in neither Redis nor the journal.
                self._close_circuit()
                return
            log.warning(
                "Redis still unreachable after %d attempts, serving from memory: %s",
                attempts,
                error,
            )

    async def _round(self, start: int, *, first_now: bool = False) -> StorageUnavailable | None:
        """Up to `backoff.attempts` probes; None when one answers, else the last error."""
        error: StorageUnavailable | None = None
        for attempt in range(start, start + self._backoff.attempts):
            if attempt > start or not first_now:
                await self._pause(self._backoff.delay(attempt))
            try:
                await self.attempt("ping", self._probe())
            except StorageUnavailable as exc:
                self._reachable = False
                error = exc
            else:
                self._reachable = True
                return None
        return error

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    def _close_circuit(self) -> None:
        self._in_outage = False
        self._reachable = True
        self._set_available(True)
        log.info("✅ Redis connected successfully: %s", self._target)

    def _set_available(self, available: bool) -> None:
        self._available = available
        for listener in self._listeners:
            listener(available)
