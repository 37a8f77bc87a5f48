"""The in-memory backend: one process's state, same answers as Redis gives a single instance.

Atomic because no method awaits: the resilient composition relies on it too (a fallback call
and its journal entry happen with nothing in between).
"""

from __future__ import annotations

import bisect
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from voicegate.storage.base import (
    Decision,
    Lease,
    LeaseRef,
    RateWindow,
    SessionRecord,
    StateBackend,
    ValueKind,
)
from voicegate.storage.keys import value_key

_SWEEP_EVERY = 30.0
_DAY_MS = 86_400_000


@dataclass(slots=True)
class _UserState:
    hits: list[tuple[float, str]] = field(default_factory=list)  # (ms, member), ascending
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # sid -> (owner, until)
    resumable: dict[str, float] = field(default_factory=dict)  # sid -> last-alive ms

    def live_leases(self, now_ms: float) -> dict[str, tuple[str, float]]:
        self.leases = {sid: lease for sid, lease in self.leases.items() if lease[1] > now_ms}
        return self.leases

    def trim_hits(self, since_ms: float) -> None:
        del self.hits[: bisect.bisect_right(self.hits, (since_ms, "\uffff"))]

    def refusal_at_cap(self, session_id: str, lease: Lease, now_ms: float) -> Decision | None:
        open_now = self.live_leases(now_ms)
        if session_id not in open_now and len(open_now) >= lease.max_concurrent:
            return Decision(False, len(open_now), lease.max_concurrent, 0.0, "concurrency")
        return None


class MemoryBackend(StateBackend):
    """Dictionaries with lazy expiry."""

    name = "memory"

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], tuple[str, float]] = {}  # -> (json, expiry s)
        self._users: dict[str, _UserState] = {}
        self._values: dict[str, tuple[str, float]] = {}  # key name -> (value, expiry s)
        self._next_sweep = time.monotonic() + _SWEEP_EVERY

    # -- sessions ---------------------------------------------------------------------------

    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        found = self.record_with_ttl(user_id, session_id)
        return None if found is None else found[0]

    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        self._store(record, ttl)

    async def delete_session(self, user_id: str, session_id: str) -> None:
        self._sessions.pop((user_id, session_id), None)

    def record_with_ttl(self, user_id: str, session_id: str) -> tuple[SessionRecord, int] | None:
        """The record and its remaining seconds to live (at least 1), or None."""
        entry = self._sessions.get((user_id, session_id))
        if entry is None or entry[1] <= time.time():
            return None
        return SessionRecord.model_validate_json(entry[0]), max(1, int(entry[1] - time.time()))

    def _store(self, record: SessionRecord, ttl: int) -> None:
        key = (record.user_id, record.session_id)
        self._sessions[key] = (record.model_dump_json(), time.time() + ttl)
        self._sweep_if_due()

    # -- rate limit -------------------------------------------------------------------------

    async def hit(self, user_id: str, window: RateWindow) -> Decision:
        decision, _user = self._decide(user_id, window, None)
        return decision

    async def reset(self, user_id: str) -> None:
        user = self._users.get(user_id)
        if user is not None:
            user.hits = []

    def record_hits(self, user_id: str, hits: list[tuple[float, str]]) -> None:
        """Add hits observed elsewhere (Redis) so that a later fallback still counts them."""
        user = self._users.setdefault(user_id, _UserState())
        for hit in hits:
            bisect.insort(user.hits, hit)

    def hits_of(self, user_id: str) -> list[tuple[float, str]]:
        user = self._users.get(user_id)
        return list(user.hits) if user else []

    def _decide(
        self, user_id: str, window: RateWindow, lease: Lease | None, session_id: str = ""
    ) -> tuple[Decision, _UserState]:
        now_ms = time.time() * 1000
        window_ms = window.seconds * 1000
        user = self._users.setdefault(user_id, _UserState())
        user.trim_hits(now_ms - window_ms)
        count = len(user.hits)
        if count >= window.count:
            retry = (user.hits[0][0] + window_ms - now_ms) / 1000
            return Decision(False, count, window.count, max(retry, 0.0), "rate_limit"), user
        if lease is not None and (refused := user.refusal_at_cap(session_id, lease, now_ms)):
            return refused, user
        user.hits.append((now_ms, session_id or secrets.token_hex(8)))
        return Decision(True, count + 1, window.count), user

    # -- admission, leases and resume -------------------------------------------------------

    async def admit(
        self, record: SessionRecord, window: RateWindow, ttl: int, lease: Lease
    ) -> Decision:
        decision, _user = self._decide(record.user_id, window, lease, record.session_id)
        if decision.allowed:
            self.adopt(record, ttl, lease)
        return decision

    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        self._sessions.pop((user_id, session_id), None)
        user = self._users.get(user_id)
        if user is not None:
            user.hits = [hit for hit in user.hits if hit[1] != session_id]
            user.leases.pop(session_id, None)
            user.resumable.pop(session_id, None)

    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        found = self.record_with_ttl(user_id, session_id)
        if found is None:
            return None
        user = self._users.setdefault(user_id, _UserState())
        refused = user.refusal_at_cap(session_id, lease, time.time() * 1000)
        if refused is not None:
            return refused
        self.adopt(found[0], ttl, lease)
        return found[0]

    async def claim_latest(
        self, user_id: str, ttl: int, lease: Lease, *, grace: float, stale_after: float
    ) -> SessionRecord | Decision | None:
        user = self._users.get(user_id)
        if user is None:
            return None
        now_ms = time.time() * 1000
        # Older than the grace: never resumable again, whatever happens next.
        user.resumable = {s: t for s, t in user.resumable.items() if t >= now_ms - grace * 1000}
        open_now = user.live_leases(now_ms)
        at_cap = False
        # Newest first; equal times by session id, descending (as Redis's ZREVRANGE).
        for session_id, _alive in sorted(user.resumable.items(), key=_newest, reverse=True):
            found = self.record_with_ttl(user_id, session_id)
            if found is None:
                del user.resumable[session_id]
                continue
            held = open_now.get(session_id)
            if held is None and len(open_now) >= lease.max_concurrent:
                at_cap = True  # a stale lease further on needs no slot: keep looking
                continue
            if held is not None and held[1] - lease.seconds * 1000 >= now_ms - stale_after * 1000:
                continue  # renewed lately: its connection is alive
            self.adopt(found[0], ttl, lease)
            return found[0]
        if at_cap:
            return Decision(False, len(open_now), lease.max_concurrent, 0.0, "concurrency")
        return None

    async def renew_many(self, leases: Sequence[LeaseRef]) -> list[bool]:
        now_ms = time.time() * 1000
        renewed = []
        for ref in leases:
            user = self._users.setdefault(ref.user_id, _UserState())
            current = user.leases.get(ref.session_id)
            if current is not None and current[0] != ref.lease.connection_id:
                renewed.append(False)
                continue
            self.take_lease(ref.user_id, ref.session_id, ref.lease)
            if ref.session_id in user.resumable:  # an ended session must not come back
                user.resumable[ref.session_id] = now_ms
            renewed.append(True)
        return renewed

    async def release(
        self, user_id: str, session_id: str, connection_id: str, *, resumable: bool
    ) -> None:
        user = self._users.get(user_id)
        if user is None or user.leases.get(session_id, ("",))[0] != connection_id:
            return
        del user.leases[session_id]
        if not resumable:
            user.resumable.pop(session_id, None)
        elif (user_id, session_id) in self._sessions:
            user.resumable[session_id] = time.time() * 1000

    def adopt(self, record: SessionRecord, ttl: int, lease: Lease) -> None:
        """Hold `record` with `lease` on it, marked alive now (admitted or claimed, here or in
        Redis: a fallback then knows all of it)."""
        self._store(record, ttl)
        self.take_lease(record.user_id, record.session_id, lease)
        self.mark_alive(record.user_id, record.session_id)

    def take_lease(self, user_id: str, session_id: str, lease: Lease) -> None:
        """Record a lease granted elsewhere (Redis), so a fallback knows who owns what."""
        user = self._users.setdefault(user_id, _UserState())
        user.leases[session_id] = (lease.connection_id, time.time() * 1000 + lease.seconds * 1000)

    def mark_alive(self, user_id: str, session_id: str, *, only_if_marked: bool = False) -> None:
        user = self._users.setdefault(user_id, _UserState())
        if not only_if_marked or session_id in user.resumable:
            user.resumable[session_id] = time.time() * 1000

    def last_alive(self, user_id: str, session_id: str) -> float | None:
        """When the session was last known alive (ms), if it is resumable."""
        user = self._users.get(user_id)
        return None if user is None else user.resumable.get(session_id)

    # -- small values -----------------------------------------------------------------------

    async def get_value(self, kind: ValueKind, key: str) -> str | None:
        found = self.value_with_ttl(kind, key)
        return None if found is None else found[0]

    async def set_value(self, kind: ValueKind, key: str, value: str, ttl: int) -> None:
        self._values[value_key(kind, key)] = (value, time.time() + ttl)
        self._sweep_if_due()

    def value_with_ttl(self, kind: ValueKind, key: str) -> tuple[str, int] | None:
        """The value and its remaining milliseconds to live, or None."""
        entry = self._values.get(value_key(kind, key))
        remaining = 0 if entry is None else int((entry[1] - time.time()) * 1000)
        return None if entry is None or remaining <= 0 else (entry[0], remaining)

    async def ping(self) -> float:
        return 0.0

    # -- housekeeping -----------------------------------------------------------------------

    def _sweep_if_due(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + _SWEEP_EVERY
        now = time.time()
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        self._values = {k: v for k, v in self._values.items() if v[1] > now}
        now_ms = now * 1000
        for user_id in [u for u, s in self._users.items() if not s.live_leases(now_ms)]:
            user = self._users[user_id]
            user.trim_hits(now_ms - _DAY_MS)
            user.resumable = {
                sid: t for sid, t in user.resumable.items() if (user_id, sid) in self._sessions
            }
            if not user.hits and not user.resumable:
                del self._users[user_id]


def _newest(item: tuple[str, float]) -> tuple[float, str]:
    return item[1], item[0]
