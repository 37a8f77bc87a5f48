"""The Redis sampler stops when the shutdown cancels it, whatever it is awaiting then."""

from __future__ import annotations

import asyncio

from tests.redis_server import RedisServer
from voicegate._retry import Backoff
from voicegate.ops.monitoring import RedisSampler
from voicegate.storage import create_backend
from voicegate.storage.target import RedisTarget

# Loop turns to let pass before stopping: together they cover every step of a PING and an INFO,
# including the turn where a command's send completes as the cancellation arrives (Python
# 3.11's `asyncio.wait_for` inside redis-py then swallows it).
TURNS = range(40)


async def test_the_sampler_stops_at_any_point_of_a_sample(redis_server: RedisServer) -> None:
    storage = create_backend(
        RedisTarget.parse(redis_server.url), op_timeout=2, backoff=Backoff(attempts=1)
    )
    await storage.start()
    try:
        for _ in range(2):
            for turns in TURNS:
                sampler = RedisSampler(storage, interval=0)  # always inside a command
                sampler.start()
                for _ in range(turns):
                    await asyncio.sleep(0)
                async with asyncio.timeout(10):  # a lost cancellation: samples for ever
                    assert await sampler.stop(), f"still sampling, stopped after {turns} turns"
    finally:
        await storage.close()
