"""Figure 3: session set-up, WebSocket open → `gateway.session`, with Redis and in memory mode.

Two gateways run side by side with the local engine, one with Redis (`REDIS_ENABLED=true`, its
own redis-server) and one in memory mode (`REDIS_ENABLED=false`). The client opens a session on
each in turn (alternating which goes first), timing from the start of the TCP connect to the
arrival of `gateway.session`: handshake, token check, admission, engine start. Then it closes
the session and pauses briefly, so the server's teardown (lease release) is not in the next
sample. Each sample is a new user with a fresh token, minted before the clock starts.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

from websockets.asyncio.client import connect

from bench._procs import JWT_SECRET, gateway_env, running_gateway, running_redis
from bench._stats import Row, fmt_ms, summary, verdict
from bench.load_client import COMPRESSION
from voicegate.auth.tokens import mint_token


async def _open_once(url: str) -> float:
    started = time.perf_counter()
    ws = await connect(url, compression=COMPRESSION, open_timeout=10, ping_interval=None)
    try:
        first = await asyncio.wait_for(ws.recv(), 10)
        elapsed = time.perf_counter() - started
        if '"gateway.session"' not in str(first):
            raise RuntimeError(f"expected gateway.session, got {str(first)[:200]}")
    finally:
        await ws.close()
    return elapsed


async def _measure(urls: dict[str, str], samples: int) -> dict[str, list[float]]:
    names = list(urls)
    tokens = {
        name: [mint_token(JWT_SECRET, f"setup-{name}-{i}", "elite") for i in range(samples + 20)]
        for name in names
    }
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(samples + 20):  # the first 20 of each warm up, not counted
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            elapsed = await _open_once(f"{urls[name]}?token={tokens[name][i]}")
            if i >= 20:
                times[name].append(elapsed * 1000)
            await asyncio.sleep(0.005)
    return times


def run(samples: int) -> dict[str, dict[str, float]]:
    """Set-up time summaries in ms, `redis` and `memory`."""
    from bench._loop import run as run_async

    with ExitStack() as stack:
        redis = stack.enter_context(running_redis())
        with_redis = stack.enter_context(running_gateway(gateway_env(redis.url)))
        in_memory = stack.enter_context(running_gateway(gateway_env(None)))
        urls = {"redis": with_redis.ws, "memory": in_memory.ws}
        times = run_async(_measure(urls, samples))
    return {name: summary(values) for name, values in times.items()}


def rows(result: dict[str, dict[str, float]]) -> list[Row]:
    with_redis, in_memory = result["redis"]["p50"], result["memory"]["p50"]
    delta = with_redis - in_memory
    return [
        Row(
            "session set-up (open → gateway.session), p50",
            f"{fmt_ms(with_redis)} (Δ {delta * 1000:+.0f} µs)", f"memory {fmt_ms(in_memory)}",
            f"{with_redis / in_memory:.2f}×", "Δ ≤ +1 ms", verdict(delta <= 1.0),
        )
    ]  # fmt: skip
