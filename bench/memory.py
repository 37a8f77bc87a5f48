"""Figure 6: memory per connected idle session.

A gateway in OpenAI mode (with Redis, the stand-in upstream in its own process) is warmed up by
opening and closing a few sessions, then its RSS is read (the "empty server"). Then N sessions
are opened and left idle (no frames; only the gateway's own lease heartbeats run) and the RSS is
read again: (RSS with N - RSS empty) / N is the cost of one idle session, its upstream
WebSocket included. The same is measured with the local engine (no upstream connection).
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench._procs import (
    JWT_SECRET,
    Child,
    gateway_env,
    rss_bytes,
    running_gateway,
    running_redis,
)
from bench._stats import Row, verdict
from bench.load_client import COMPRESSION
from voicegate.auth.tokens import mint_token

TARGET_KB = 30  # docs/benchmarks.md: ≤ 30 KB, the upstream socket included


async def _open(url: str, user: str, semaphore: asyncio.Semaphore) -> ClientConnection:
    async with semaphore:
        ws = await connect(
            f"{url}?token={mint_token(JWT_SECRET, user, 'elite')}",
            compression=COMPRESSION, open_timeout=60, ping_interval=None,
        )  # fmt: skip
        first = await asyncio.wait_for(ws.recv(), 60)
        if '"gateway.session"' not in str(first):
            raise RuntimeError(f"expected gateway.session, got {str(first)[:200]}")
        return ws


async def _measure(url: str, pid: int, sessions: int) -> dict[str, Any]:
    semaphore = asyncio.Semaphore(20)
    warm = await asyncio.gather(*(_open(url, f"warm-{i}", semaphore) for i in range(20)))
    await asyncio.gather(*(ws.close() for ws in warm))
    await asyncio.sleep(2.0)
    empty = rss_bytes(pid)
    opened = await asyncio.gather(*(_open(url, f"idle-{i}", semaphore) for i in range(sessions)))
    await asyncio.sleep(3.0)  # a heartbeat or so: each session's steady state
    loaded = rss_bytes(pid)
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return {
        "sessions": sessions,
        "rss_empty": empty,
        "rss_loaded": loaded,
        "bytes_per_session": (loaded - empty) / sessions,
    }


def run(sessions: int) -> dict[str, dict[str, Any]]:
    """RSS figures of the gateway with `sessions` idle sessions, per engine."""
    from bench._loop import run as run_async

    results = {}
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis())
        standin = stack.enter_context(Child("bench.standin"))
        upstream = standin.read_line(20)
        for engine, env in (
            ("openai", gateway_env(redis.url, upstream_url=upstream)),
            ("local", gateway_env(redis.url)),
        ):
            with running_gateway(env) as gateway:
                assert gateway.process is not None
                results[engine] = run_async(_measure(gateway.ws, gateway.process.pid, sessions))
    return results


def rows(result: dict[str, dict[str, Any]]) -> list[Row]:
    out = []
    for engine, label in (("openai", "OpenAI engine"), ("local", "local engine")):
        r = result[engine]
        per_kb = r["bytes_per_session"] / 1024
        out.append(
            Row(
                f"memory per idle session ({label})",
                f"{per_kb:.1f} KB ({r['sessions']} sessions)",
                f"empty server {r['rss_empty'] / 2**20:.1f} MB",
                f"RSS {r['rss_loaded'] / r['rss_empty']:.2f}×",
                f"≤ {TARGET_KB} KB/session",
                verdict(per_kb <= TARGET_KB),
            )
        )
    return out
