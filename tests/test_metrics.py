"""`/metrics` of a real server process, against a real Redis and real WebSocket sessions.

Server processes of their own: prometheus-client's registry is process-wide, and the figures
asserted here are each server's own counts from zero.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.clients import b64, make_token, open_voice, pcm, refused
from tests.redis_server import RedisServer, free_port
from tests.servers import GatewayFactory, InProcessServer, ServerProcess
from tests.standin_openai import StandinOpenAI

Samples = dict[str, float]
API_KEY = "sk-test-metrics-key-0123456789"


def parse(text: str) -> Samples:
    """Every sample as `name{label="value",…}` (labels sorted) -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def scrape(gateway: ServerProcess | InProcessServer) -> Samples:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{gateway.http}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def eventually(
    gateway: ServerProcess | InProcessServer, check: Callable[[Samples], bool], timeout: float = 10
) -> Samples:
    """Scrape until `check` holds (what another process does is only seen by looking again)."""
    samples: Samples = {}
    try:
        async with asyncio.timeout(timeout):
            while not check(samples := await scrape(gateway)):
                await asyncio.sleep(0.05)
    except TimeoutError:
        voicegate = {k: v for k, v in samples.items() if k.startswith("voicegate_")}
        raise AssertionError(f"metrics never satisfied the check: {voicegate}") from None
    return samples


async def test_a_session_and_a_redis_outage_show_in_the_metrics(
    redis_server: RedisServer, server_factory: GatewayFactory
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url, "METRICS_SAMPLE_SECONDS": "0.2"})
    m = await eventually(gateway, lambda m: m.get("voicegate_redis_connected_clients", 0) >= 1)
    assert m["voicegate_redis_fallback"] == 0
    assert m["voicegate_sessions_admitted_total"] == 0
    assert m['voicegate_sessions_rejected_total{reason="rate_limit"}'] == 0  # exists from start
    assert m["voicegate_redis_used_memory_bytes"] > 0
    assert m["voicegate_redis_maxmemory_bytes"] == 0  # the test server sets no limit
    assert m["voicegate_redis_latency_ms"] >= 0  # a sampled figure, not NaN
    assert m["voicegate_redis_ops_per_second"] >= 0
    assert m["voicegate_redis_errors_total"] == m["voicegate_redis_fallbacks_total"] == 0
    assert m["voicegate_session_max_seconds"] == 1800  # VOICE_MAX_SESSION_SECONDS' default

    token = make_token("metered")
    client = await open_voice(gateway, token)
    await client.send({"type": "audio.input", "audio": b64(pcm(0.3))})
    await client.send({"type": "input_audio_buffer.commit"})
    answer = await client.recv_until("response.done")
    assert (await scrape(gateway))["voicegate_sessions_active"] == 1
    await client.close()
    # The relay's counts are flushed each heartbeat and when the connection ends.
    m = await eventually(gateway, lambda m: m["voicegate_sessions_active"] == 0)
    assert m["voicegate_sessions_admitted_total"] == 1
    assert m['voicegate_relay_messages_total{direction="client_to_engine"}'] == 2
    assert m['voicegate_relay_messages_total{direction="engine_to_client"}'] == len(answer)
    assert m['voicegate_relay_bytes_total{direction="client_to_engine"}'] > len(b64(pcm(0.3)))
    assert m['voicegate_relay_bytes_total{direction="engine_to_client"}'] > len(b64(pcm(0.3)))
    assert m['voicegate_upstream_connects_total{engine="local"}'] == 1
    assert m['voicegate_redis_command_seconds_count{command="admit"}'] == 1
    assert m['voicegate_redis_command_seconds_count{command="release"}'] >= 1
    assert m['voicegate_redis_command_seconds_count{command="ping"}'] >= 1
    assert m['voicegate_redis_command_seconds_bucket{command="admit",le="+Inf"}'] == 1

    resumed = await open_voice(gateway, token, session_id=client.session_id)
    await resumed.close()
    assert await refused(gateway, "not-a-jwt") == (4001, "Malformed token")
    m = await scrape(gateway)
    assert m["voicegate_sessions_resumed_total"] == 1
    assert m['voicegate_sessions_rejected_total{reason="auth"}'] == 1

    # Redis goes away: the fallback gauge says so, the sampled figures stop pretending.
    redis_server.stop()
    m = await eventually(gateway, lambda m: m["voicegate_redis_fallback"] == 1)
    assert math.isnan(m["voicegate_redis_connected_clients"])
    assert m["voicegate_redis_fallbacks_total"] == 1  # one outage …
    assert m["voicegate_redis_errors_total"] >= 1  # … seen by at least one failed operation
    during = await open_voice(gateway, token)  # admitted from memory, written back later
    await during.close()
    redis_server.start()
    m = await eventually(gateway, lambda m: m["voicegate_redis_fallback"] == 0, timeout=20)
    assert m["voicegate_redis_writeback_total"] >= 2  # the record and its admission hit
    assert m["voicegate_redis_fallbacks_total"] == 1  # the recovery is not another outage
    m = await eventually(gateway, lambda m: m["voicegate_redis_connected_clients"] >= 1)
    assert m["voicegate_sessions_admitted_total"] == 2


async def test_a_scrape_never_waits_on_a_frozen_redis(
    redis_server: RedisServer, server_factory: GatewayFactory
) -> None:
    gateway = server_factory({
        "REDIS_URL": redis_server.url, "METRICS_SAMPLE_SECONDS": "0.2",
        "REDIS_OP_TIMEOUT_MS": "1000",
    })  # fmt: skip
    await eventually(gateway, lambda m: m.get("voicegate_redis_connected_clients", 0) >= 1)
    pid = redis_server._process.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)  # Redis holds every command; the sampler waits 1 s on it
    try:
        slowest = 0.0
        async with asyncio.timeout(10):
            while True:
                started = time.monotonic()
                m = await scrape(gateway)
                slowest = max(slowest, time.monotonic() - started)
                if m["voicegate_redis_fallback"] == 1:
                    break
                await asyncio.sleep(0.05)
        assert slowest < 0.5, f"a scrape took {slowest:.3f} s while Redis was frozen"
    finally:
        os.kill(pid, signal.SIGCONT)
    await eventually(gateway, lambda m: m["voicegate_redis_fallback"] == 0, timeout=20)


async def test_upstream_connects_reconnects_and_failures_by_cause(
    server_factory: GatewayFactory,
) -> None:
    async with StandinOpenAI(valid_key=API_KEY) as upstream:
        env = {"VOICE_ENGINE": "openai", "OPENAI_REALTIME_URL": upstream.url,
               "REDIS_ENABLED": "false", "RETRY_MAX_ATTEMPTS": "1"}  # fmt: skip
        gateway = server_factory({**env, "OPENAI_API_KEY": API_KEY})
        m = await scrape(gateway)
        # REDIS_ENABLED=false is memory by choice, not a fallback; there is no Redis to sample.
        assert m["voicegate_redis_fallback"] == 0
        assert math.isnan(m["voicegate_redis_connected_clients"])
        client = await open_voice(gateway, make_token())
        await upstream.wait_for_connections(1)
        await upstream.close_connections(1011, "upstream hiccup")
        await client.recv_until("gateway.upstream_reconnected")
        m = await scrape(gateway)
        assert m['voicegate_upstream_connects_total{engine="openai"}'] == 2
        assert m['voicegate_upstream_reconnects_total{engine="openai"}'] == 1
        await client.close()

        refusing = server_factory({**env, "OPENAI_API_KEY": "sk-test-wrong-key-0123456789"})
        assert (await refused(refusing, make_token()))[0] == 1011
        m = await scrape(refusing)
        assert m['voicegate_upstream_failures_total{cause="rejected",engine="openai"}'] == 1
        assert m['voicegate_sessions_rejected_total{reason="upstream"}'] == 1

    nowhere = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    unreachable = server_factory({**env, "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": nowhere})
    assert (await refused(unreachable, make_token()))[0] == 1011
    m = await scrape(unreachable)
    assert m['voicegate_upstream_failures_total{cause="unavailable",engine="openai"}'] == 1
