"""The Redis backend: one Lua script per decision, every key of a user in one hash slot
(`keys.py`). Its client comes from `client.client_for`.

redis-py's failures surface as `StorageUnavailable` (`base_exceptions`, mapped once by
`StateBackend`); the resilient composition decides what to do about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import Awaitable, Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from voicegate._redact import mask_text
from voicegate.errors import StorageUnavailable
from voicegate.storage.base import (
    Decision,
    Lease,
    LeaseRef,
    RateWindow,
    RedisFigures,
    SessionRecord,
    StateBackend,
    ValueKind,
)
from voicegate.storage.client import AnyRedis, close_client
from voicegate.storage.keys import Keys, value_key

__all__ = ["RedisBackend"]

ScriptArg = str | int | float


@functools.cache
def _script(name: str) -> str:
    return files("voicegate.storage").joinpath("lua", f"{name}.lua").read_text()


class RedisBackend(StateBackend):
    """State in Redis. Every failure surfaces as `StorageUnavailable`."""

    name = "redis"
    base_exceptions = (RedisError, RedisClusterException, OSError)

    def __init__(self, client: AnyRedis, *, secrets: tuple[str, ...] = ()) -> None:
        self.client = client
        self._secrets = secrets  # masked out of error messages, whatever redis-py puts there
        register = client.register_script
        # redis-py's Script runs EVALSHA and, on NOSCRIPT (a restart or failover emptied the
        # script cache), loads the script and runs it again: NOSCRIPT never reaches us.
        self._admit = register(_script("admit"))
        self._hit = register(_script("hit"))
        self._claim = register(_script("claim"))
        self._claim_latest = register(_script("claim_latest"))
        self._renew = register(_script("renew"))
        self._release = register(_script("release"))
        self._merge = register(_script("merge"))
        self._marks = register(_script("marks"))

    def describe_error(self, exc: BaseException) -> str:
        return mask_text(super().describe_error(exc), self._secrets)

    @property
    def shared(self) -> bool:
        return True

    # -- sessions ---------------------------------------------------------------------------

    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        raw = await self.client.get(Keys(user_id).session(session_id))
        return None if raw is None else SessionRecord.model_validate_json(raw)

    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        key = Keys(record.user_id).session(record.session_id)
        await self.client.set(key, record.model_dump_json(), ex=ttl)

    async def delete_session(self, user_id: str, session_id: str) -> None:
        await self.client.delete(Keys(user_id).session(session_id))

    # -- rate limit -------------------------------------------------------------------------

    async def hit(self, user_id: str, window: RateWindow, *, member: str = "") -> Decision:
        """`member` names the hit (random when empty), so that a mirror can name it alike."""
        keys = [Keys(user_id).admissions]
        args: list[ScriptArg] = [
            window.count,
            window.seconds * 1000,
            member or secrets.token_hex(8),
        ]
        allowed, count, retry_ms = await self._hit(keys=keys, args=args)
        if allowed:
            return Decision(True, int(count), window.count)
        return Decision(False, int(count), window.count, int(retry_ms) / 1000, "rate_limit")

    async def reset(self, user_id: str) -> None:
        await self.client.delete(Keys(user_id).admissions)

    # -- admission, leases and resume -------------------------------------------------------

    async def admit(
        self, record: SessionRecord, window: RateWindow, ttl: int, lease: Lease
    ) -> Decision:
        k = Keys(record.user_id)
        keys = [k.admissions, k.session(record.session_id), k.leases, k.owners, k.resumable]
        args: list[ScriptArg] = [
            window.count,
            window.seconds * 1000,
            record.model_dump_json(),
            ttl,
            lease.max_concurrent,
            _ms(lease.seconds),
            record.session_id,
            lease.connection_id,
        ]
        allowed, refusal, count, retry_ms = await self._admit(keys=keys, args=args)
        if allowed:
            return Decision(True, int(count), window.count)
        if _text(refusal) == "rate_limit":
            return Decision(False, int(count), window.count, int(retry_ms) / 1000, "rate_limit")
        return Decision(False, int(count), lease.max_concurrent, 0.0, "concurrency")

    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        k = Keys(user_id)
        async with self.client.pipeline(transaction=True) as pipe:  # one slot: fine on Cluster
            pipe.delete(k.session(session_id))
            pipe.zrem(k.admissions, session_id)  # the admission's hit is keyed by the session id
            pipe.zrem(k.leases, session_id)
            pipe.hdel(k.owners, session_id)
            pipe.zrem(k.resumable, session_id)
            await pipe.execute()

    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        k = Keys(user_id)
        keys = [k.session(session_id), k.leases, k.owners, k.resumable]
        args: list[ScriptArg] = [
            ttl,
            lease.max_concurrent,
            _ms(lease.seconds),
            session_id,
            lease.connection_id,
        ]
        return _claimed(await self._claim(keys=keys, args=args), lease)

    async def claim_latest(
        self, user_id: str, ttl: int, lease: Lease, *, grace: float, stale_after: float
    ) -> SessionRecord | Decision | None:
        k = Keys(user_id)
        args: list[ScriptArg] = [
            ttl,
            lease.max_concurrent,
            _ms(lease.seconds),
            lease.connection_id,
            _ms(grace),
            _ms(stale_after),
            k.sessions,
        ]
        result = await self._claim_latest(keys=[k.resumable, k.leases, k.owners], args=args)
        return _claimed(result, lease)

    async def has_resumable(self, user_id: str) -> bool:
        """Whether the user has sessions detached from their connection (some may be past the
        grace: only `claim_latest` knows for sure)."""
        return bool(await self.client.zcard(Keys(user_id).resumable))

    async def renew_many(self, leases: Sequence[LeaseRef]) -> list[bool]:
        """One pipeline for a whole heartbeat tick (scripts are loaded first if Redis lost them)."""
        if isinstance(self.client, RedisCluster):  # keys of many slots: concurrent calls
            results = await asyncio.gather(*(self._renewal(ref) for ref in leases))
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for ref in leases:
                    await self._renewal(ref, pipe)  # queued: answered by execute()
                results = await pipe.execute()
        return [bool(result) for result in results]

    def _renewal(self, ref: LeaseRef, client: Any = None) -> Awaitable[Any]:
        k = Keys(ref.user_id)
        keys = [k.leases, k.owners, k.resumable, k.session(ref.session_id)]
        args: list[ScriptArg] = [_ms(ref.lease.seconds), ref.session_id, ref.lease.connection_id]
        return self._renew(keys=keys, args=args, client=client)

    async def release(
        self, user_id: str, session_id: str, connection_id: str, *, resumable: bool
    ) -> None:
        k = Keys(user_id)
        keys = [k.leases, k.owners, k.resumable, k.session(session_id)]
        await self._release(keys=keys, args=[session_id, connection_id, int(resumable)])

    # -- small values -----------------------------------------------------------------------

    async def get_value(self, kind: ValueKind, key: str) -> str | None:
        raw = await self.client.get(value_key(kind, key))
        return None if raw is None else _text(raw)

    async def set_value(self, kind: ValueKind, key: str, value: str, ttl: int) -> None:
        await self.client.set(value_key(kind, key), value, ex=ttl)

    # -- write-back after an outage (journal.py) --------------------------------------------

    async def merge(
        self,
        user_id: str,
        record: SessionRecord | None,
        hits: list[tuple[float, str]],
        ttl: int,
        window_seconds: int,
    ) -> None:
        """Write back a record unless Redis holds a newer one, and add hits (a set union)."""
        k = Keys(user_id)
        session_key = k.session(record.session_id if record else "-")
        args: list[ScriptArg] = [
            record.model_dump_json() if record else "",
            record.updated_at if record else 0,
            ttl,
            window_seconds * 1000,
        ]
        for score, member in hits:
            args += [score, member]
        await self._merge(keys=[session_key, k.admissions], args=args)

    async def merge_marks(self, user_id: str, marks: Sequence[tuple[str, float, int]]) -> None:
        """Write back resumable marks (session id, last-alive ms, record's remaining ms),
        keeping the later last-alive of the two."""
        args: list[ScriptArg] = [value for mark in marks for value in mark]
        await self._marks(keys=[Keys(user_id).resumable], args=args)

    async def force_lease(self, user_id: str, session_id: str, lease: Lease) -> None:
        """Make `lease` the session's owner, whatever Redis thought (write-back after an outage,
        when this connection resumed the session from memory)."""
        k = Keys(user_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(k.leases, {session_id: _ms(time.time() + lease.seconds)})
            pipe.hset(k.owners, session_id, lease.connection_id)
            pipe.pexpire(k.leases, _ms(lease.seconds))
            pipe.pexpire(k.owners, _ms(lease.seconds))
            await pipe.execute()

    async def restore_value(self, kind: ValueKind, key: str, value: str, ttl_ms: int) -> None:
        """`set_value` with the milliseconds the value has left."""
        await self.client.set(value_key(kind, key), value, px=ttl_ms)

    # -- status -----------------------------------------------------------------------------

    async def ping(self) -> float:
        started = time.perf_counter()
        await self.client.ping()
        return (time.perf_counter() - started) * 1000

    async def info(self) -> dict[str, Any]:
        """Redis's `INFO` (of the first node, on Cluster)."""
        info: dict[str, Any] = await self.client.info()
        if isinstance(self.client, RedisCluster):  # one dict per node: report the first
            info = next(iter(info.values())) if info and "redis_version" not in info else info
        return info

    async def figures(self) -> RedisFigures | None:
        try:
            return RedisFigures.from_info(await self.ping(), await self.info())
        except StorageUnavailable:
            return None

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await close_client(self.client)


def _claimed(result: Any, lease: Lease) -> SessionRecord | Decision | None:
    """A claim script's answer: the record, `{0, open leases}` at the cap, or nothing."""
    if result is None:
        return None
    if isinstance(result, list):
        return Decision(False, int(result[1]), lease.max_concurrent, 0.0, "concurrency")
    return SessionRecord.model_validate_json(result)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
