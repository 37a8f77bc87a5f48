"""The storage contract: session records, the rate limit, leases and resumable sessions, and
small values with a TTL; the value types it speaks in.

Memory and Redis implement `StateBackend`; `ResilientBackend` composes the two. Every caller is
typed against `StateBackend` alone.
"""

from __future__ import annotations

import functools
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from voicegate.conversation import Turn
from voicegate.errors import StorageUnavailable
from voicegate.storage.keys import ValueKind

__all__ = [
    "Decision",
    "Lease",
    "LeaseRef",
    "RateWindow",
    "RedisFigures",
    "SessionRecord",
    "StateBackend",
    "Turn",
    "ValueKind",
]

Refusal = Literal["rate_limit", "concurrency"]
StateListener = Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class RateWindow:
    """At most `count` new sessions per user in any rolling `seconds`."""

    count: int
    seconds: int


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


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """A lease and the session it is on, as the heartbeat renews them."""

    user_id: str
    session_id: str
    lease: Lease


@dataclass(frozen=True, slots=True)
class RedisFigures:
    """What the health report and `/metrics` show of Redis: `INFO` and a timed `PING`."""

    latency_ms: float
    version: str | None
    connected_clients: int | None
    used_memory: int | None
    used_memory_human: str | None
    maxmemory: int | None  # 0: no limit
    ops_per_second: float | None

    @classmethod
    def from_info(cls, latency_ms: float, info: dict[str, Any]) -> RedisFigures:
        """The figures from a PING's round trip and the reply to `INFO` (missing fields: None)."""

        def number(name: str) -> int | None:
            value = info.get(name)
            return None if value is None else int(value)

        ops = info.get("instantaneous_ops_per_sec")
        version, human = info.get("redis_version"), info.get("used_memory_human")
        return cls(
            latency_ms=latency_ms,
            version=None if version is None else str(version),
            connected_clients=number("connected_clients"),
            used_memory=number("used_memory"),
            used_memory_human=None if human is None else str(human),
            maxmemory=number("maxmemory"),
            ops_per_second=None if ops is None else float(ops),
        )


class StateBackend(ABC):
    """Everything the gateway keeps: sessions, rate limits, leases and small values, with atomic
    admission and resume. Memory and Redis give one instance the same answers."""

    name: str  # "memory" | "redis"

    #: The client library's exceptions. Every public coroutine a subclass defines maps them to
    #: `StorageUnavailable` (as limits' `base_exceptions`): wrapped once here, not per method.
    base_exceptions: ClassVar[tuple[type[Exception], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.base_exceptions:
            for attribute, member in list(vars(cls).items()):
                if not attribute.startswith("_") and inspect.iscoroutinefunction(member):
                    setattr(cls, attribute, _mapping_errors(member, cls.base_exceptions))

    def describe_error(self, exc: BaseException) -> str:
        """The text of a `StorageUnavailable` made from a client library's `exc`."""
        return f"{type(exc).__name__}: {exc}"

    # -- lifecycle and status ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect, or say why not (the app's lifespan calls it once, before serving)."""
        return None  # nothing to connect to

    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
        return None  # nothing to release

    @property
    def shared(self) -> bool:
        """True while state is shared with other instances (Redis serves the calls)."""
        return False

    async def figures(self) -> RedisFigures | None:
        """Redis's figures; None when there is no Redis to read or it does not answer."""
        return None

    def add_listener(self, listener: StateListener) -> None:
        """Call `listener(shared)` whenever `shared` changes."""
        return None  # it never changes here

    # -- session records --------------------------------------------------------------------

    @abstractmethod
    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        """The record, or None when unknown or expired. Another user's id is simply unknown."""

    @abstractmethod
    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        """Write the record and restart its time to live."""

    @abstractmethod
    async def delete_session(self, user_id: str, session_id: str) -> None:
        """Forget the record; no error when it does not exist."""

    # -- rate limit -------------------------------------------------------------------------

    @abstractmethod
    async def hit(self, user_id: str, window: RateWindow) -> Decision:
        """Count one event for `user_id` if the window has room, and say whether it had."""

    @abstractmethod
    async def reset(self, user_id: str) -> None:
        """Forget the user's window."""

    # -- admission, leases and resume -------------------------------------------------------

    @abstractmethod
    async def admit(
        self, record: SessionRecord, window: RateWindow, ttl: int, lease: Lease
    ) -> Decision:
        """Decide the rate limit and the concurrency cap and, when allowed, write the record,
        count the hit, take the lease and mark the session resumable — all at once. A refusal
        writes nothing."""

    @abstractmethod
    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        """Undo an admission that never became a session (the engine could not be reached):
        the record, the hit, the lease and the resumable mark go; the user is not charged."""

    @abstractmethod
    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        """Resume by id: take the session's lease (replacing its owner), refresh its TTL and
        mark it alive now. None when unknown; a refusing `Decision` at the concurrency cap."""

    @abstractmethod
    async def claim_latest(
        self, user_id: str, ttl: int, lease: Lease, *, grace: float, stale_after: float
    ) -> SessionRecord | Decision | None:
        """Resume without an id: among the user's resumable sessions alive within `grace`
        seconds, newest first, claim (as `claim`) the first whose record exists and whose lease
        is free or stale (not renewed for `stale_after` seconds: its holder is presumed dead).

        None when there is no candidate; a refusing `Decision` when the only candidates need a
        slot and the user is at the cap. Atomic: two connections never get the same session.
        """

    @abstractmethod
    async def renew_many(self, leases: Sequence[LeaseRef]) -> list[bool]:
        """Extend each lease, in order; False for a session another connection took over. A
        renewed session still marked resumable is marked alive now (an ended one stays ended).
        """

    async def renew(self, user_id: str, session_id: str, lease: Lease) -> bool:
        """`renew_many` for one lease."""
        return (await self.renew_many([LeaseRef(user_id, session_id, lease)]))[0]

    @abstractmethod
    async def release(
        self, user_id: str, session_id: str, connection_id: str, *, resumable: bool
    ) -> None:
        """A connection ends. If `connection_id` still owns the session: drop its lease, and
        either mark the session alive now (`resumable`: the connection was lost, the client
        may come back) or end it (the client closed it). Else nothing: a newer connection's
        session is never ended by an older one."""

    # -- small values -----------------------------------------------------------------------

    @abstractmethod
    async def get_value(self, kind: ValueKind, key: str) -> str | None:
        """A value set by `set_value` and not expired, else None."""

    @abstractmethod
    async def set_value(self, kind: ValueKind, key: str, value: str, ttl: int) -> None:
        """Keep `value` for `ttl` seconds. `key` is a user id for "plan", a hex digest of the
        secret for "client_secret" (never the secret itself: anything else is a ValueError)."""

    @abstractmethod
    async def ping(self) -> float:
        """Round trip of a trivial command to the store serving calls now, in milliseconds."""


def _mapping_errors(
    method: Callable[..., Any], errors: tuple[type[Exception], ...]
) -> Callable[..., Any]:
    @functools.wraps(method)
    async def mapped(self: StateBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except errors as exc:
            raise StorageUnavailable(self.describe_error(exc)) from exc

    return mapped
