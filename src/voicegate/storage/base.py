"""The storage contract: session records, the per-user rate limit, and connection leases.

Memory and Redis implement `StateBackend`; `ResilientBackend` composes the two. Every key of
one user lives in one Redis Cluster hash slot, so admission is a single atomic script.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from voicegate.config import RateLimit
from voicegate.conversation import Turn

__all__ = [
    "Decision",
    "Lease",
    "RateLimiter",
    "SessionRecord",
    "SessionStore",
    "StateBackend",
    "Turn",
]

Refusal = Literal["rate_limit", "concurrency"]


class SessionRecord(BaseModel):
    """What a resume needs: who, which engine, the user's choices, and the conversation."""

    session_id: str
    user_id: str
    email: str | None = None
    plan: str
    engine: str
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    # What the user chose (voice, speed, language, turn_detection); absent keys: server default.
    preferences: dict[str, Any] = Field(default_factory=dict)
    conversation: list[Turn] = Field(default_factory=list)

    def touch(self) -> None:
        self.updated_at = time.time()


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of the rate limiter, or of an admission."""

    allowed: bool
    count: int
    limit: int
    retry_after: float = 0.0
    refusal: Refusal | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """A connection's claim on a session: at most one connection owns it, and each user has at
    most `max_concurrent` live leases. Renewed by a heartbeat; gone after `seconds` without."""

    connection_id: str
    seconds: float
    max_concurrent: int


class SessionStore(ABC):
    """Session records by (user, session id); a record expires `ttl` seconds after its last save."""

    @abstractmethod
    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        """The record, or None when unknown or expired. Another user's id is simply unknown."""

    @abstractmethod
    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        """Write the record and restart its time to live."""

    @abstractmethod
    async def delete_session(self, user_id: str, session_id: str) -> None:
        """Forget the record; no error when it does not exist."""


class RateLimiter(ABC):
    """A per-user sliding window over the last `limit.window_seconds`."""

    @abstractmethod
    async def hit(self, user_id: str, limit: RateLimit) -> Decision:
        """Count one event for `user_id` if the window has room, and say whether it had."""

    @abstractmethod
    async def reset(self, user_id: str) -> None:
        """Forget the user's window."""


class StateBackend(SessionStore, RateLimiter):
    """Everything the gateway keeps: sessions, rate limits and leases, with atomic admission."""

    name: str

    @abstractmethod
    async def admit(
        self, record: SessionRecord, limit: RateLimit, ttl: int, lease: Lease
    ) -> Decision:
        """Decide the rate limit and the concurrency cap and, when allowed, write the record,
        count the hit and take the lease — all at once. A refusal writes nothing."""

    @abstractmethod
    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        """Undo an admission that never became a session (the engine could not be reached):
        the record, the rate-limit hit and the lease go, so the user is not charged."""

    @abstractmethod
    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        """Resume: take the lease of an existing session (replacing its owner) and refresh its
        TTL. None when the session is unknown; a refusing `Decision` at the concurrency cap."""

    @abstractmethod
    async def renew(self, user_id: str, session_id: str, lease: Lease) -> bool:
        """Extend the lease; False when another connection has taken the session over."""

    async def renew_many(self, leases: Sequence[tuple[str, str, Lease]]) -> list[bool]:
        """`renew` for many (user id, session id, lease) at once, in order."""
        return [
            await self.renew(user_id, session_id, lease) for user_id, session_id, lease in leases
        ]

    @abstractmethod
    async def release(self, user_id: str, session_id: str, connection_id: str) -> None:
        """Drop the lease if `connection_id` still owns it."""

    @abstractmethod
    async def ping(self) -> float:
        """Round-trip time of a trivial command, in milliseconds."""

    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
