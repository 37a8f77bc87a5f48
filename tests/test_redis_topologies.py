"""The gateway on the other REDIS_URL forms of contract §1: Sentinel, Cluster and TLS."""

from __future__ import annotations

import pytest

from tests.clients import Server, make_token, open_voice, refused
from tests.redis_server import RedisServer
from tests.servers import Serve


async def _admit_limit_and_resume(gateway: Server, user: str) -> None:
    token = make_token(user)
    first = await open_voice(gateway, token)
    await first.close()
    for _ in range(4):
        await (await open_voice(gateway, token)).close()
    assert await refused(gateway, token) == (4029, "Rate limit exceeded (5 sessions/hour max)")
    again = await open_voice(gateway, token, session_id=first.session_id)
    assert again.first is not None and again.first["resumed"] is True
    await again.close()


# In process, like TLS: with filterwarnings = error, a deprecated option redis-py warns about or
# a connection left unclosed at shutdown (a ResourceWarning) fails these tests.
@pytest.mark.slow
async def test_sentinel_url(serve: Serve, sentinel_port: int) -> None:
    gateway = await serve(redis_url=f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster")
    assert (await gateway.health())["status"] == "healthy"
    await _admit_limit_and_resume(gateway, "sentinel-user")


@pytest.mark.slow
async def test_cluster_url(serve: Serve, cluster_port: int) -> None:
    gateway = await serve(redis_url=f"redis+cluster://127.0.0.1:{cluster_port}")
    assert (await gateway.health())["status"] == "healthy"
    assert "✅ Redis connected successfully: redis+cluster://127.0.0.1:" in gateway.log
    await _admit_limit_and_resume(gateway, "cluster-user")


async def test_tls_url(serve: Serve, redis_tls_server: RedisServer) -> None:
    gateway = await serve(redis_url=redis_tls_server.url)
    assert (await gateway.health())["status"] == "healthy"
    assert "✅ Redis connected successfully: rediss://127.0.0.1:" in gateway.log
    await _admit_limit_and_resume(gateway, "tls-user")
