"""Figures 1 and 2: admission and the rate-limit decision, each against its Redis baseline.

Everything runs in this process, on one redis-py asyncio client (hiredis parser, uvloop as under
uvicorn), one command awaited at a time, so each sample is one call's latency:

    ping        `PING`                                           the baseline of admission
    admit       `RedisBackend.admit`: one EVALSHA of admit.lua     figure 1, target <= 1.3 x ping
    resilient   `ResilientBackend.admit`, what the gateway calls  (Redis admit + timeout + mirror)
    hit         `RedisBackend.hit`: one EVALSHA of hit.lua         figure 2
    five        PING, ZREMRANGEBYSCORE, ZCARD, ZADD, EXPIRE,       the baseline of figure 2,
                five awaited calls: a rate limiter without a script  target >= 2.5 x hit

The kinds are interleaved in short blocks, so that a noisy neighbour hurts all of them alike.
Each admission is a new session of one of 1000 users (production keys, not one hot key).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from bench._stats import Row, fmt_us, summary, verdict
from voicegate._retry import Backoff
from voicegate.storage import (
    Lease,
    RateWindow,
    RedisBackend,
    RedisTarget,
    ResilientBackend,
    SessionRecord,
    client_for,
)
from voicegate.storage.keys import Keys

LIMIT = RateWindow(1_000_000, 3600)
USERS = 1000


async def measure(redis_url: str, rounds: int, block: int) -> dict[str, dict[str, float]]:
    """Latency summaries (seconds) of each kind of call."""
    target = RedisTarget.parse(redis_url)
    backend = RedisBackend(client_for(target, timeout=2.0))
    resilient = ResilientBackend(
        RedisBackend(client_for(target, timeout=2.0)),
        op_timeout=0.25, backoff=Backoff(), masked_url=target.masked,
    )  # fmt: skip  # the defaults of REDIS_OP_TIMEOUT_MS and RETRY_*
    await resilient.start()
    client = backend.client
    counter = iter(range(10**9))

    def record() -> SessionRecord:
        i = next(counter)
        return SessionRecord(
            session_id=secrets.token_urlsafe(16), user_id=f"bench-{i % USERS}",
            plan="elite", engine="openai",
        )  # fmt: skip

    def lease() -> Lease:
        return Lease(uuid.uuid4().hex, 15.0, 100_000)

    async def five_round_trips(user: str) -> None:
        key = Keys(user).admissions + ":five"
        now_ms = int(time.time() * 1000)
        await client.ping()
        await client.zremrangebyscore(key, "-inf", now_ms - LIMIT.seconds * 1000)
        await client.zcard(key)
        await client.zadd(key, {secrets.token_hex(8): now_ms})
        await client.expire(key, LIMIT.seconds)

    def next_user() -> str:
        return f"bench-{next(counter) % USERS}"

    # Each kind: a factory of the call to time, its arguments prepared outside the timing.
    kinds: dict[str, Callable[[], Callable[[], Awaitable[Any]]]] = {
        "ping": lambda: client.ping,
        "admit": lambda: partial(backend.admit, record(), LIMIT, 3600, lease()),
        "resilient": lambda: partial(resilient.admit, record(), LIMIT, 3600, lease()),
        "hit": lambda: partial(backend.hit, next_user(), LIMIT),
        "five": lambda: partial(five_round_trips, next_user()),
    }
    samples: dict[str, list[float]] = {name: [] for name in kinds}
    perf = time.perf_counter
    try:
        for make in kinds.values():  # warm up: scripts loaded, pool connected
            for _ in range(50):
                await make()()
        for round_ in range(rounds):
            order = list(kinds)
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for name in order:
                calls = [kinds[name]() for _ in range(block)]
                out = samples[name]
                for call in calls:
                    started = perf()
                    await call()
                    out.append(perf() - started)
    finally:
        await resilient.close()
        await backend.close()
    return {name: summary(values) for name, values in samples.items()}


def rows(result: dict[str, dict[str, float]]) -> list[Row]:
    ping, admit = result["ping"]["p50"], result["admit"]["p50"]
    resilient, hit, five = result["resilient"]["p50"], result["hit"]["p50"], result["five"]["p50"]
    return [
        Row(
            "admission (RedisBackend.admit), p50", fmt_us(admit), f"PING {fmt_us(ping)}",
            f"{admit / ping:.2f}×", "≤ 1.30×", verdict(admit / ping <= 1.3),
        ),
        Row(
            "  same via ResilientBackend.admit", fmt_us(resilient), f"PING {fmt_us(ping)}",
            f"{resilient / ping:.2f}×", "≤ 1.30×", verdict(resilient / ping <= 1.3),
        ),
        Row(
            "rate-limit decision (RedisBackend.hit), p50", fmt_us(hit),
            f"5 round trips {fmt_us(five)}", f"{five / hit:.2f}× faster", "≥ 2.50× faster",
            verdict(five / hit >= 2.5),
        ),
    ]  # fmt: skip
