"""The redis-py client for a `RedisTarget`: one builder per topology (a registry, not branches
in every caller), so standalone, unix, Sentinel and Cluster URLs all give one asyncio client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from voicegate.storage.target import RedisTarget, Topology

__all__ = ["AnyRedis", "client_for", "close_client"]

AnyRedis = aioredis.Redis | RedisCluster


def client_for(target: RedisTarget, *, timeout: float) -> AnyRedis:
    """A redis-py asyncio client for `target`. Nothing connects until the first command.

    `timeout` bounds connecting and each socket read; callers bound whole commands themselves.
    """
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # No retry on a timeout: redis-py's default when `retry_on_timeout` (deprecated since
        # redis-py 6, a DeprecationWarning for the Sentinel client) is not passed.
        "health_check_interval": 15,
    }
    return _BUILDERS[target.topology](target, common)


def _standalone(target: RedisTarget, common: dict[str, Any]) -> AnyRedis:
    # redis-py reads the URL's options itself (ssl_*, socket_*, …), as contract §1 promises.
    return aioredis.from_url(target.url, **common)


def _cluster(target: RedisTarget, common: dict[str, Any]) -> AnyRedis:
    # The cluster client runs its own health checks.
    options = _without(common, "health_check_interval")
    return RedisCluster.from_url(target.url.replace("+cluster", "", 1), **options)


def _sentinel(target: RedisTarget, common: dict[str, Any]) -> AnyRedis:
    options = dict(common, username=target.username, password=target.password)
    if target.tls:
        options["ssl"] = True
        options.update({k: v for k, v in target.options.items() if k.startswith("ssl_")})
    # The sentinels' own password when the URL names one, else the master's (as before).
    password = target.options.get("sentinel_password", target.password)
    sentinel_options = dict(_without(options, "health_check_interval"), password=password)
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_options)
    master: aioredis.Redis = sentinel.master_for(target.service_name or "", db=target.db, **options)
    return master


async def close_client(client: AnyRedis) -> None:
    """Close `client` and every connection it opened.

    A Sentinel master's `aclose()` closes its own pool but not the clients that asked the
    sentinels where the master is (each holds a connection to a sentinel): those are closed too.
    """
    try:
        await client.aclose()
    finally:
        pool = client.connection_pool if isinstance(client, aioredis.Redis) else None
        manager = getattr(pool, "sentinel_manager", None)
        if isinstance(manager, Sentinel):
            for sentinel in manager.sentinels:
                await sentinel.aclose()


_BUILDERS: dict[Topology, Callable[[RedisTarget, dict[str, Any]], AnyRedis]] = {
    "standalone": _standalone,
    "unix": _standalone,
    "sentinel": _sentinel,
    "cluster": _cluster,
}


def _without(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in names}
