"""The in-memory backend: one process's state, same answers as Redis gives a single instance."""

from __future__ import annotations

import bisect
import secrets
import time
from dataclasses import dataclass, field

from voicegate.config import RateLimit
from voicegate.storage.base import Decision, Lease, SessionRecord, StateBackend

_SWEEP_EVERY = 30.0


@dataclass(slots=True)
class _UserState:
    hits: list[tuple[float, str]] = field(default_factory=list)  # (ms, member), ascending
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # sid -> (owner, until)

    def live_leases(self, now: float) -> dict[str, tuple[str, float]]:
        self.leases = {sid: lease for sid, lease in self.leases.items() if lease[1] > now}
        return self.leases

    def trim_hits(self, since_ms: float) -> None:
        del self.hits[: bisect.bisect_right(self.hits, (since_ms, "\uffff"))]


class MemoryBackend(StateBackend):
    """Dictionaries with lazy expiry. Atomic because no method awaits."""

    name = "memory"

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], tuple[str, float]] = {}
        self._users: dict[str, _UserState] = {}
        self._next_sweep = time.monotonic() + _SWEEP_EVERY

    # -- sessions ---------------------------------------------------------------------------

    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        entry = self._sessions.get((user_id, session_id))
        if entry is None or entry[1] <= time.time():
            return None
        return SessionRecord.model_validate_json(entry[0])

    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        self._store(record, ttl)

    async def delete_session(self, user_id: str, session_id: str) -> None:
        self._sessions.pop((user_id, session_id), None)

    def _store(self, record: SessionRecord, ttl: int) -> None:
        key = (record.user_id, record.session_id)
        self._sessions[key] = (record.model_dump_json(), time.time() + ttl)
        self._sweep_if_due()

    # -- rate limit -------------------------------------------------------------------------

    async def hit(self, user_id: str, limit: RateLimit) -> Decision:
        decision, _user = self._decide(user_id, limit, None)
        return decision

    async def reset(self, user_id: str) -> None:
        self._users.pop(user_id, None)

    def record_hits(self, user_id: str, hits: list[tuple[float, str]]) -> None:
        """Add hits observed elsewhere (Redis) so that a later fallback still counts them."""
        user = self._users.setdefault(user_id, _UserState())
        for hit in hits:
            bisect.insort(user.hits, hit)

    def hits_of(self, user_id: str) -> list[tuple[float, str]]:
        user = self._users.get(user_id)
        return list(user.hits) if user else []

    def _decide(
        self, user_id: str, limit: RateLimit, lease: Lease | None, session_id: str = ""
    ) -> tuple[Decision, _UserState]:
        now_ms = time.time() * 1000
        window_ms = limit.window_seconds * 1000
        user = self._users.setdefault(user_id, _UserState())
        user.trim_hits(now_ms - window_ms)
        count = len(user.hits)
        if count >= limit.count:
            retry = (user.hits[0][0] + window_ms - now_ms) / 1000
            return Decision(False, count, limit.count, max(retry, 0.0), "rate_limit"), user
        if lease is not None:
            open_now = user.live_leases(now_ms)
            if session_id not in open_now and len(open_now) >= lease.max_concurrent:
                return Decision(
                    False, len(open_now), lease.max_concurrent, 0.0, "concurrency"
                ), user
        user.hits.append((now_ms, session_id or secrets.token_hex(8)))
        return Decision(True, count + 1, limit.count), user

    # -- admission and leases ---------------------------------------------------------------

    async def admit(
        self, record: SessionRecord, limit: RateLimit, ttl: int, lease: Lease
    ) -> Decision:
        decision, user = self._decide(record.user_id, limit, lease, record.session_id)
        if decision.allowed:
            self._store(record, ttl)
            user.leases[record.session_id] = (lease.connection_id, _lease_until(lease))
        return decision

    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        self._sessions.pop((user_id, session_id), None)
        user = self._users.get(user_id)
        if user is not None:
            user.hits = [hit for hit in user.hits if hit[1] != session_id]
            user.leases.pop(session_id, None)

    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        record = await self.get_session(user_id, session_id)
        if record is None:
            return None
        user = self._users.setdefault(user_id, _UserState())
        open_now = user.live_leases(time.time() * 1000)
        if session_id not in open_now and len(open_now) >= lease.max_concurrent:
            return Decision(False, len(open_now), lease.max_concurrent, 0.0, "concurrency")
        open_now[session_id] = (lease.connection_id, _lease_until(lease))
        self._store(record, ttl)
        return record

    async def renew(self, user_id: str, session_id: str, lease: Lease) -> bool:
        user = self._users.setdefault(user_id, _UserState())
        current = user.leases.get(session_id)
        if current is not None and current[0] != lease.connection_id:
            return False
        user.leases[session_id] = (lease.connection_id, _lease_until(lease))
        return True

    async def release(self, user_id: str, session_id: str, connection_id: str) -> None:
        user = self._users.get(user_id)
        if user and user.leases.get(session_id, ("",))[0] == connection_id:
            del user.leases[session_id]

    def take_lease(self, user_id: str, session_id: str, lease: Lease) -> None:
        """Record a lease granted elsewhere (Redis), so a fallback knows who owns what."""
        user = self._users.setdefault(user_id, _UserState())
        user.leases[session_id] = (lease.connection_id, _lease_until(lease))

    async def ping(self) -> float:
        return 0.0

    # -- housekeeping -----------------------------------------------------------------------

    def _sweep_if_due(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + _SWEEP_EVERY
        now = time.time()
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        now_ms = now * 1000
        for user_id in [u for u, s in self._users.items() if not s.live_leases(now_ms)]:
            user = self._users[user_id]
            user.trim_hits(now_ms - 86_400_000)
            if not user.hits:
                del self._users[user_id]


def _lease_until(lease: Lease) -> float:
    return time.time() * 1000 + lease.seconds * 1000
