"""What memory accepted while Redis was away, and the write-back that hands it to Redis.

The journal names what changed (which record, which user's hits, which lease); the values are
read from memory at write-back time, so the latest state is written, once. Every merge keeps
what another instance wrote meanwhile: the newer record wins, hits are a set union, a
resumable session's last-alive is the later of the two (ZADD GT).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from voicegate.ops.metrics import REDIS_WRITEBACK
from voicegate.storage.base import Lease, RateWindow, ValueKind
from voicegate.storage.memory import MemoryBackend
from voicegate.storage.redis import RedisBackend

__all__ = ["Journal"]

T = TypeVar("T")
log = logging.getLogger("voicegate.storage")
SessionKey = tuple[str, str]  # (user id, session id)


class Call(Protocol):
    """How the write-back awaits each Redis operation (the circuit bounds and times them)."""

    async def __call__(self, label: str, awaitable: Awaitable[T], /) -> T: ...


async def _direct(label: str, awaitable: Awaitable[T], /) -> T:
    return await awaitable


@dataclass
class Journal:
    """What to write back. Recording methods are plain (no await): they run right after the
    memory call they journal, with nothing in between."""

    sessions: set[SessionKey] = field(default_factory=set)
    deleted: set[SessionKey] = field(default_factory=set)
    cancelled: set[SessionKey] = field(default_factory=set)
    leases: dict[SessionKey, Lease] = field(default_factory=dict)
    marks: set[SessionKey] = field(default_factory=set)
    releases: dict[SessionKey, tuple[str, bool]] = field(default_factory=dict)
    resets: set[str] = field(default_factory=set)
    hits: dict[str, RateWindow] = field(default_factory=dict)
    values: set[tuple[ValueKind, str]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any(
            (
                self.sessions,
                self.deleted,
                self.cancelled,
                self.leases,
                self.marks,
                self.releases,
                self.resets,
                self.hits,
                self.values,
            )
        )

    # -- recording --------------------------------------------------------------------------

    def saved(self, user_id: str, session_id: str) -> None:
        self.sessions.add((user_id, session_id))
        self.deleted.discard((user_id, session_id))

    def deleted_session(self, user_id: str, session_id: str) -> None:
        self.deleted.add((user_id, session_id))
        self.sessions.discard((user_id, session_id))

    def cancelled_admission(self, user_id: str, session_id: str) -> None:
        key = (user_id, session_id)
        self.cancelled.add(key)
        self.sessions.discard(key)
        self.leases.pop(key, None)
        self.marks.discard(key)
        self.releases.pop(key, None)

    def hit(self, user_id: str, window: RateWindow) -> None:
        self.hits[user_id] = window

    def reset(self, user_id: str) -> None:
        self.resets.add(user_id)
        self.hits.pop(user_id, None)

    def claimed(self, user_id: str, session_id: str, lease: Lease) -> None:
        """A record admitted or claimed from memory: its record, owner and mark."""
        self.saved(user_id, session_id)
        self.leases[(user_id, session_id)] = lease
        self.marks.add((user_id, session_id))

    def marked(self, user_id: str, session_id: str) -> None:
        self.marks.add((user_id, session_id))

    def released(self, user_id: str, session_id: str, connection_id: str, resumable: bool) -> None:
        # Written back after the leases: a lease taken and given back during the outage is
        # forced, then released, so Redis ends (or keeps resumable) what memory did.
        self.releases[(user_id, session_id)] = (connection_id, resumable)

    def value_set(self, kind: ValueKind, key: str) -> None:
        self.values.add((kind, key))

    def absorb(self, newer: Journal) -> None:
        """Take in `newer` (journaled after this one was taken for a write-back)."""
        self.sessions = (self.sessions - newer.deleted - newer.cancelled) | newer.sessions
        self.deleted = (self.deleted - newer.sessions) | newer.deleted
        self.cancelled |= newer.cancelled
        self.leases = {k: v for k, v in self.leases.items() if k not in newer.cancelled}
        self.leases.update(newer.leases)
        self.marks = (self.marks - newer.cancelled) | newer.marks
        self.releases = {k: v for k, v in self.releases.items() if k not in newer.cancelled}
        self.releases.update(newer.releases)
        self.hits = {u: w for u, w in self.hits.items() if u not in newer.resets}
        self.resets |= newer.resets
        self.hits.update(newer.hits)
        self.values |= newer.values

    # -- write-back -------------------------------------------------------------------------

    async def write_back(
        self, redis: RedisBackend, memory: MemoryBackend, *, call: Call = _direct
    ) -> int:
        """Merge everything journaled into Redis until nothing is left; returns how many
        records, hits, marks and values were written.

        Interrupted (Redis unavailable, or cancelled at shutdown), the journal keeps what was
        not written yet, together with what was journaled meanwhile, for the next attempt.
        """
        written = 0
        while self:
            batch = Journal()
            batch.absorb(self)
            vars(self).update(vars(Journal()))  # what comes in from now on is journaled afresh
            try:
                written += await batch._apply(redis, memory, call)
            except BaseException:
                batch.absorb(self)  # the rest of the batch, then what came in meanwhile
                vars(self).update(vars(batch))
                raise
        if written:
            REDIS_WRITEBACK.inc(written)
            log.info("Redis write-back done: %d records and hits merged", written)
        return written

    async def _apply(self, redis: RedisBackend, memory: MemoryBackend, call: Call) -> int:
        """Write each entry, removing it once written (so an interruption keeps the rest).
        Order matters: records before the leases on them, leases before their release."""
        written = 0
        for key in sorted(self.sessions):
            found = memory.record_with_ttl(*key)
            if found is not None:
                record, ttl = found
                await call("merge", redis.merge(key[0], record, [], ttl, 0))
                written += 1
            self.sessions.discard(key)
        for key in sorted(self.deleted):
            await call("delete_session", redis.delete_session(*key))
            self.deleted.discard(key)
        for key in sorted(self.cancelled):
            await call("cancel_admission", redis.cancel_admission(*key))
            self.cancelled.discard(key)
        for key, lease in sorted(self.leases.items()):
            await call("force_lease", redis.force_lease(key[0], key[1], lease))
            del self.leases[key]
        written += await self._apply_marks(redis, memory, call)
        for key, (connection_id, resumable) in sorted(self.releases.items()):
            release = redis.release(key[0], key[1], connection_id, resumable=resumable)
            await call("release", release)
            del self.releases[key]
        for user_id in sorted(self.resets):
            await call("reset", redis.reset(user_id))
            self.resets.discard(user_id)
        for user_id, window in sorted(self.hits.items()):
            hits = memory.hits_of(user_id)
            await call("merge", redis.merge(user_id, None, hits, 0, window.seconds))
            written += len(hits)
            del self.hits[user_id]
        for kind, name in sorted(self.values):
            value = memory.value_with_ttl(kind, name)
            if value is not None:
                await call("set_value", redis.restore_value(kind, name, value[0], value[1]))
                written += 1
            self.values.discard((kind, name))
        return written

    async def _apply_marks(self, redis: RedisBackend, memory: MemoryBackend, call: Call) -> int:
        by_user: dict[str, list[tuple[str, float, int]]] = {}
        for user_id, session_id in self.marks:
            alive = memory.last_alive(user_id, session_id)
            found = memory.record_with_ttl(user_id, session_id)
            if alive is not None and found is not None:  # else ended or expired since
                by_user.setdefault(user_id, []).append((session_id, alive, found[1] * 1000))
        for user_id, marks in sorted(by_user.items()):
            await call("merge_marks", redis.merge_marks(user_id, marks))
        self.marks.clear()
        return sum(len(marks) for marks in by_user.values())
