"""The Redis backend: one Lua script per decision, keys hash-tagged per user.

Keys (one user's keys share a Redis Cluster hash slot through the `{…}` tag):

    vg:{<user>}:session:<session id>   the session record (JSON), EX = SESSION_TTL_SECONDS
    vg:{<user>}:admissions             sorted set of admission times (ms), the sliding window
    vg:{<user>}:leases                 sorted set of session id -> lease expiry (ms)
    vg:{<user>}:owners                 hash of session id -> connection id owning it
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.connection import HiredisRespSerializer
from redis.exceptions import RedisClusterException, RedisError
from redis.utils import HIREDIS_AVAILABLE

from voicegate.config import RateLimit
from voicegate.errors import ConfigError, StorageUnavailable
from voicegate.storage.base import Decision, Lease, SessionRecord, StateBackend

AnyRedis = aioredis.Redis | RedisCluster
ScriptArg = str | int | float


def _script(name: str) -> str:
    return files("voicegate.storage").joinpath("lua", f"{name}.lua").read_text()


def user_tag(user_id: str) -> str:
    """The hash tag of a user's keys; ids with braces are digested so the tag stays whole."""
    if "{" in user_id or "}" in user_id or not user_id:
        return "h" + hashlib.sha256(user_id.encode()).hexdigest()[:24]
    return user_id


class Keys:
    """Key names of one user."""

    __slots__ = ("admissions", "leases", "owners", "prefix")

    def __init__(self, user_id: str) -> None:
        self.prefix = f"vg:{{{user_tag(user_id)}}}:"
        self.admissions = self.prefix + "admissions"
        self.leases = self.prefix + "leases"
        self.owners = self.prefix + "owners"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"


class _HiredisPackedConnection(aioredis.Connection):
    """redis-py's asyncio connection packs commands in Python (~11 µs for admission's 15
    arguments); hiredis packs the same bytes in ~1.3 µs (bench/README.md)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


def client_from_url(url: str, *, timeout: float) -> AnyRedis:
    """A redis-py asyncio client for any `REDIS_URL` form of contract §1.

    `timeout` bounds connecting and each socket read; callers bound whole commands themselves.
    """
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
        "health_check_interval": 15,
    }
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme.endswith("+cluster"):
        plain = url.replace("+cluster", "", 1)
        # The cluster client takes neither option (it runs its own health checks and retries).
        options = _without(common, "health_check_interval", "retry_on_timeout")
        return RedisCluster.from_url(plain, **options)
    if scheme.endswith("+sentinel"):
        return _sentinel_master(parts, common)
    if scheme == "redis" and HIREDIS_AVAILABLE:  # TLS and unix sockets keep their own class
        common["connection_class"] = _HiredisPackedConnection
    return aioredis.from_url(url, **common)


def _without(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in names}


def _sentinel_master(parts: Any, common: dict[str, Any]) -> aioredis.Redis:
    """`redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]`."""
    hosts = parts.netloc.rpartition("@")[2]
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigError("REDIS_URL: a sentinel URL needs the service name as its path")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        sentinels.append((name or host, int(port or 26379)))
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    options = dict(common, password=parts.password, username=parts.username or None)
    if parts.scheme.startswith("rediss"):
        options["ssl"] = True
        options.update({k: v for k, v in query.items() if k.startswith("ssl_")})
    db = int(path[1]) if len(path) > 1 else 0
    sentinel = Sentinel(sentinels, sentinel_kwargs=_without(options, "health_check_interval"))  # type: ignore[no-untyped-call]
    master: aioredis.Redis = sentinel.master_for(path[0], db=db, **options)
    return master


class RedisBackend(StateBackend):
    """State in Redis. Every failure surfaces as `StorageUnavailable`."""

    name = "redis"

    def __init__(self, client: AnyRedis) -> None:
        self.client = client
        register = client.register_script
        # redis-py's Script runs EVALSHA and, on NOSCRIPT (a restart or failover emptied the
        # script cache), loads the script and runs it again: NOSCRIPT never reaches us.
        self._admit = register(_script("admit"))
        self._hit = register(_script("hit"))
        self._claim = register(_script("claim"))
        self._renew = register(_script("renew"))
        self._release = register(_script("release"))
        self._merge = register(_script("merge"))

    async def get_session(self, user_id: str, session_id: str) -> SessionRecord | None:
        raw = await self._call(self.client.get(Keys(user_id).session(session_id)))
        return None if raw is None else SessionRecord.model_validate_json(raw)

    async def save_session(self, record: SessionRecord, ttl: int) -> None:
        key = Keys(record.user_id).session(record.session_id)
        await self._call(self.client.set(key, record.model_dump_json(), ex=ttl))

    async def delete_session(self, user_id: str, session_id: str) -> None:
        await self._call(self.client.delete(Keys(user_id).session(session_id)))

    async def hit(self, user_id: str, limit: RateLimit) -> Decision:
        keys = [Keys(user_id).admissions]
        args: list[ScriptArg] = [limit.count, limit.window_seconds * 1000, secrets.token_hex(8)]
        allowed, count, retry_ms = await self._call(self._hit(keys=keys, args=args))
        if allowed:
            return Decision(True, int(count), limit.count)
        return Decision(False, int(count), limit.count, int(retry_ms) / 1000, "rate_limit")

    async def reset(self, user_id: str) -> None:
        await self._call(self.client.delete(Keys(user_id).admissions))

    async def admit(
        self, record: SessionRecord, limit: RateLimit, ttl: int, lease: Lease
    ) -> Decision:
        k = Keys(record.user_id)
        keys = [k.admissions, k.session(record.session_id), k.leases, k.owners]
        args: list[ScriptArg] = [
            limit.count, limit.window_seconds * 1000, record.model_dump_json(), ttl,
            lease.max_concurrent, int(lease.seconds * 1000), record.session_id,
            lease.connection_id,
        ]  # fmt: skip
        allowed, refusal, count, retry_ms = await self._call(self._admit(keys=keys, args=args))
        if allowed:
            return Decision(True, int(count), limit.count)
        if _text(refusal) == "rate_limit":
            return Decision(False, int(count), limit.count, int(retry_ms) / 1000, "rate_limit")
        return Decision(False, int(count), lease.max_concurrent, 0.0, "concurrency")

    async def cancel_admission(self, user_id: str, session_id: str) -> None:
        k = Keys(user_id)
        async with self.client.pipeline(transaction=True) as pipe:  # one slot: fine on Cluster
            pipe.delete(k.session(session_id))
            pipe.zrem(k.admissions, session_id)  # the admission's hit is keyed by the session id
            pipe.zrem(k.leases, session_id)
            pipe.hdel(k.owners, session_id)
            await self._call(pipe.execute())

    async def claim(
        self, user_id: str, session_id: str, ttl: int, lease: Lease
    ) -> SessionRecord | Decision | None:
        k = Keys(user_id)
        keys = [k.session(session_id), k.leases, k.owners]
        args: list[ScriptArg] = [
            ttl, lease.max_concurrent, int(lease.seconds * 1000), session_id, lease.connection_id,
        ]  # fmt: skip
        result = await self._call(self._claim(keys=keys, args=args))
        if result is None:
            return None
        if isinstance(result, list):
            return Decision(False, int(result[1]), lease.max_concurrent, 0.0, "concurrency")
        return SessionRecord.model_validate_json(result)

    async def force_lease(self, user_id: str, session_id: str, lease: Lease) -> None:
        """Make `lease` the session's owner, whatever Redis thought (write-back after an outage,
        when this connection resumed the session from memory)."""
        k = Keys(user_id)
        until = int((time.time() + lease.seconds) * 1000)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(k.leases, {session_id: until})
            pipe.hset(k.owners, session_id, lease.connection_id)
            pipe.pexpire(k.leases, int(lease.seconds * 1000))
            pipe.pexpire(k.owners, int(lease.seconds * 1000))
            await self._call(pipe.execute())

    async def renew(self, user_id: str, session_id: str, lease: Lease) -> bool:
        k = Keys(user_id)
        args: list[ScriptArg] = [int(lease.seconds * 1000), session_id, lease.connection_id]
        return bool(await self._call(self._renew(keys=[k.leases, k.owners], args=args)))

    async def renew_many(self, leases: Sequence[tuple[str, str, Lease]]) -> list[bool]:
        """One pipeline for a whole heartbeat tick (scripts are loaded first if Redis lost them)."""
        if isinstance(self.client, RedisCluster):  # keys of many slots: concurrent calls
            return list(await asyncio.gather(*(self.renew(*lease) for lease in leases)))
        async with self.client.pipeline(transaction=False) as pipe:
            for user_id, session_id, lease in leases:
                k = Keys(user_id)
                args: list[ScriptArg] = [int(lease.seconds * 1000), session_id, lease.connection_id]
                await self._renew(keys=[k.leases, k.owners], args=args, client=pipe)
            results = await self._call(pipe.execute())
        return [bool(result) for result in results]

    async def release(self, user_id: str, session_id: str, connection_id: str) -> None:
        k = Keys(user_id)
        args = [session_id, connection_id]
        await self._call(self._release(keys=[k.leases, k.owners], args=args))

    async def merge(
        self,
        user_id: str,
        record: SessionRecord | None,
        hits: list[tuple[float, str]],
        ttl: int,
        window_seconds: int,
    ) -> None:
        """Write back what memory recorded during an outage, keeping whatever is newer."""
        k = Keys(user_id)
        session_key = k.session(record.session_id if record else "-")
        args: list[ScriptArg] = [
            record.model_dump_json() if record else "", 0, ttl, window_seconds * 1000,
        ]  # fmt: skip
        if record:
            args[1] = record.updated_at
        for score, member in hits:
            args += [score, member]
        await self._call(self._merge(keys=[session_key, k.admissions], args=args))

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._call(self.client.ping())
        return (time.perf_counter() - started) * 1000

    async def info(self) -> dict[str, Any]:
        """The `INFO` figures the health endpoint and the metrics sampler report."""
        info: dict[str, Any] = await self._call(self.client.info())
        if isinstance(self.client, RedisCluster):  # one dict per node: report the first
            info = next(iter(info.values())) if info and "redis_version" not in info else info
        return info

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    async def _call(self, awaitable: Any) -> Any:
        """Await a redis-py call, mapping its failures to ours at this boundary."""
        try:
            return await awaitable
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
