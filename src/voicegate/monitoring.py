"""Background sampling of the Redis figures the deployment guide watches, for `/metrics`."""

from __future__ import annotations

import asyncio
import logging

from voicegate import metrics
from voicegate.errors import StorageUnavailable
from voicegate.storage import MemoryBackend, ResilientBackend

log = logging.getLogger("voicegate.monitoring")


class RedisSampler:
    """Every `interval` seconds, reads `INFO` and a timed `PING` into gauges.

    A scrape of `/metrics` only reads the gauges, so it never waits on Redis.
    """

    def __init__(self, storage: MemoryBackend | ResilientBackend, interval: float) -> None:
        self.storage = storage
        self.interval = interval

    async def run(self) -> None:
        if not isinstance(self.storage, ResilientBackend):
            metrics.REDIS_FALLBACK.set(0)
            return
        storage = self.storage
        storage.listeners.append(
            lambda available: metrics.REDIS_FALLBACK.set(0 if available else 1)
        )
        metrics.REDIS_FALLBACK.set(0 if storage.available else 1)
        while True:
            await self.sample(storage)
            await asyncio.sleep(self.interval)

    @staticmethod
    async def sample(storage: ResilientBackend) -> None:
        if not storage.available:
            return
        try:
            latency = await storage.ping()
            info = await storage.info()
        except StorageUnavailable:
            return  # the storage layer has logged it and fallen back
        metrics.REDIS_LATENCY.set(latency)
        metrics.REDIS_OPS_PER_SECOND.set(float(info.get("instantaneous_ops_per_sec") or 0))
        metrics.REDIS_CONNECTED_CLIENTS.set(float(info.get("connected_clients") or 0))
        metrics.REDIS_USED_MEMORY.set(float(info.get("used_memory") or 0))
        metrics.REDIS_MAXMEMORY.set(float(info.get("maxmemory") or 0))
