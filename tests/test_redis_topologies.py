"""The gateway on the other REDIS_URL forms of contract §1: Sentinel, Cluster and TLS."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.clients import make_token, open_voice, refused
from tests.redis_server import RedisServer
from tests.servers import ServerProcess

GatewayFactory = Callable[..., ServerProcess]


async def _admit_limit_and_resume(gateway: ServerProcess, user: str) -> None:
    health = gateway.health()
    assert health["status"] == "healthy", health
    token = make_token(user)
    first = await open_voice(gateway, token)
    await first.close()
    for _ in range(4):
        await (await open_voice(gateway, token)).close()
    assert await refused(gateway, token) == (4029, "Rate limit exceeded (5 sessions/hour max)")
    again = await open_voice(gateway, token, session_id=first.session_id)
    assert again.first is not None and again.first["resumed"] is True
    await again.close()


@pytest.mark.slow
async def test_sentinel_url(server_factory: GatewayFactory, sentinel_port: int) -> None:
    gateway = server_factory({"REDIS_URL": f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster"})
    await _admit_limit_and_resume(gateway, "sentinel-user")


@pytest.mark.slow
async def test_cluster_url(server_factory: GatewayFactory, cluster_port: int) -> None:
    gateway = server_factory({"REDIS_URL": f"redis+cluster://127.0.0.1:{cluster_port}"})
    assert "✅ Redis connected successfully: redis+cluster://127.0.0.1:" in gateway.log
    await _admit_limit_and_resume(gateway, "cluster-user")


async def test_tls_url(server_factory: GatewayFactory, redis_tls_server: RedisServer) -> None:
    gateway = server_factory({"REDIS_URL": redis_tls_server.url})
    assert "✅ Redis connected successfully: rediss://127.0.0.1:" in gateway.log
    await _admit_limit_and_resume(gateway, "tls-user")
