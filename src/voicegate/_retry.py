"""Exponential backoff with full jitter, shared by the upstream connect and the Redis reconnects.

`Backoff` holds the policy (from `RETRY_MAX_ATTEMPTS`, `RETRY_BACKOFF_FACTOR`, …); `retry` runs an
async callable under it. Full jitter (a uniform draw between 0 and the exponential ceiling) keeps
many instances that lost the same dependency at the same moment from reconnecting in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from voicegate.config import Settings

__all__ = ["Backoff", "backoff_ceiling", "backoff_delay", "retry"]

T = TypeVar("T")


def backoff_ceiling(attempt: int, base: float, factor: float, cap: float) -> float:
    """The longest delay before retry number `attempt` (from 0): base * factor**attempt, capped."""
    try:
        return min(cap, base * factor**attempt)
    except OverflowError:  # factor**attempt beyond float range: the cap applies anyway
        return cap


def backoff_delay(attempt: int, base: float, factor: float, cap: float) -> float:
    """A full-jitter delay before retry number `attempt` (from 0): uniform in [0, ceiling]."""
    return random.uniform(0.0, backoff_ceiling(attempt, base, factor, cap))


@dataclass(frozen=True, slots=True)
class Backoff:
    """How often and how patiently to try: `attempts` tries, delays `base * factor**n` capped."""

    attempts: int = 3
    base: float = 0.2
    factor: float = 2.0
    cap: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        """The policy configured by the `RETRY_*` variables."""
        return cls(
            attempts=settings.retry_max_attempts,
            base=settings.retry_base_delay,
            factor=settings.retry_backoff_factor,
            cap=settings.retry_max_delay,
        )

    def delay(self, retry_number: int) -> float:
        """A full-jitter delay before retry `retry_number` (0 for the first retry)."""
        return backoff_delay(retry_number, self.base, self.factor, self.cap)

    def delays(self) -> Iterator[float]:
        """The delays to sleep between the `attempts` tries (one fewer than attempts)."""
        for retry_number in range(self.attempts - 1):
            yield self.delay(retry_number)


async def retry(
    fn: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await `fn()` until it succeeds, at most `backoff.attempts` times.

    Only exceptions of the `retry_on` types are retried; any other one propagates at once (a
    refused credential is not worth a second try). When the attempts are exhausted the last
    exception propagates unchanged, for the caller to map to its own error. `on_retry(attempt,
    exc, delay)` is called before each sleep, `attempt` counting from 1, e.g. to log the failure.
    """
    delays = backoff.delays()
    attempt = 1
    while True:
        try:
            return await fn()
        except retry_on as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            attempt += 1
            await asyncio.sleep(delay)
