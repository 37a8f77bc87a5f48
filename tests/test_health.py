"""The health endpoint, probes and start-up lines, with Redis up, down, back, and disabled.

All in process (`serve`): Redis's outages are Redis's process stopping, not the gateway's.
"""

from __future__ import annotations

import re

import httpx

from tests.clients import make_token, open_voice
from tests.redis_server import RedisServer, free_port
from tests.servers import Serve

KEYS = {"status", "feature_enabled", "openai_configured", "weaviate_enabled", "engine", "version",
        "redis", "alerts", "timestamp"}  # fmt: skip
REDIS_KEYS = {"redis_available", "redis_enabled", "using_fallback", "redis_url", "redis_version",
              "connected_clients", "used_memory_human", "latency_ms"}  # fmt: skip


async def test_healthy_with_a_password_protected_redis(
    serve: Serve, redis_server_with_password: RedisServer
) -> None:
    server = redis_server_with_password
    gateway = await serve(redis_url=server.url, app_version="9.9.9-test")
    health = await gateway.health()
    assert set(health) == KEYS
    redis = health["redis"]
    assert isinstance(redis, dict) and set(redis) == REDIS_KEYS
    assert health["status"] == "healthy"
    assert (health["engine"], health["version"], health["feature_enabled"]) == (
        "local",
        "9.9.9-test",
        True,
    )
    assert (health["openai_configured"], health["weaviate_enabled"], health["alerts"]) == (
        False,
        False,
        [],
    )
    assert redis["redis_available"] is True and redis["using_fallback"] is False
    assert redis["redis_url"] == f"redis://default:***@127.0.0.1:{server.port}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(redis["redis_version"]))
    assert isinstance(redis["connected_clients"], int) and redis["connected_clients"] >= 1
    assert str(redis["used_memory_human"]).endswith(("K", "M", "G", "B"))
    assert isinstance(redis["latency_ms"], float) and redis["latency_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(health["timestamp"]))
    assert (
        f"✅ Redis connected successfully: redis://default:***@127.0.0.1:{server.port}"
        in gateway.log
    )
    assert "ℹ️ Sentry DSN not configured, error tracking disabled" in gateway.log
    assert server.password is not None
    assert server.password not in gateway.log
    async with httpx.AsyncClient() as http:
        assert server.password not in (await http.get(f"{gateway.http}/api/v1/voice/health")).text


async def test_unreachable_redis_at_start_degrades_and_voice_keeps_working(serve: Serve) -> None:
    port = free_port()
    gateway = await serve(redis_url=f"redis://:pw-never-shown-1234@127.0.0.1:{port}/0")
    log = gateway.log
    failed = log.index("❌ Redis connection failed: ")
    assert log.index("⚠️ Falling back to in-memory session storage") > failed
    assert "pw-never-shown-1234" not in log
    health = await gateway.health()
    assert health["status"] == "degraded"
    redis = health["redis"]
    assert isinstance(redis, dict)
    assert (redis["redis_available"], redis["using_fallback"], redis["redis_enabled"]) == (
        False,
        True,
        True,
    )
    assert redis["redis_url"] == f"redis://default:***@127.0.0.1:{port}"
    client = await open_voice(gateway, make_token())
    assert client.first is not None
    await client.close()


async def test_redis_disabled_never_connects(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    health = await gateway.health()
    redis = health["redis"]
    assert isinstance(redis, dict)
    assert health["status"] == "healthy"
    assert (redis["redis_enabled"], redis["redis_available"], redis["redis_url"]) == (
        False,
        False,
        None,
    )
    assert "Redis connection failed" not in gateway.log
    assert "REDIS_ENABLED=false" in gateway.log


async def test_feature_flag_off_reports_disabled(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, enable_voice_realtime=False)
    health = await gateway.health()
    assert (health["status"], health["feature_enabled"]) == ("disabled", False)


async def test_redis_killed_then_restarted(serve: Serve, redis_server: RedisServer) -> None:
    gateway = await serve(redis_url=redis_server.url)
    assert (await gateway.health())["status"] == "healthy"
    redis_server.stop()
    assert (await gateway.health())["status"] == "degraded"  # the health check's own PING notices
    during = await open_voice(gateway, make_token("outage-user"))  # served from memory
    await during.close()
    redis_server.start()
    await gateway.wait_for_log("Redis write-back done")
    assert gateway.log.count("✅ Redis connected successfully") == 2
    assert (await gateway.health())["status"] == "healthy"
    again = await open_voice(gateway, make_token("outage-user"), session_id=during.session_id)
    assert again.first is not None and again.first["resumed"] is True
    await again.close()


async def test_probes(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False)
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        assert (await http.get("/livez")).status_code == 200
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        metrics = await http.get("/metrics")
        page = await http.get("/")
    assert metrics.status_code == 200 and "voicegate_sessions_active" in metrics.text
    assert page.status_code == 200 and "voicegate" in page.text.lower()
