"""Background sampling of the Redis figures the deployment guide watches, for `/metrics`."""

from __future__ import annotations

import asyncio
import logging
import math

from voicegate.ops import metrics
from voicegate.storage import MemoryBackend, ResilientBackend

__all__ = ["RedisSampler"]

log = logging.getLogger("voicegate.monitoring")


class RedisSampler:
    """Every `interval` seconds, reads `INFO` and a timed `PING` into gauges.

    A scrape of `/metrics` only reads the gauges, so it never waits on Redis. The fallback gauge
    follows the storage's state changes at once, not at the next sample.
    """

    def __init__(self, storage: MemoryBackend | ResilientBackend, interval: float) -> None:
        self.storage = storage
        self.interval = interval

    async def run(self) -> None:
        """Sample until cancelled (the app's lifespan cancels it at shutdown)."""
        if not isinstance(self.storage, ResilientBackend):
            # REDIS_ENABLED=false: memory by choice, not a fallback; there is no Redis to sample.
            metrics.REDIS_FALLBACK.set(0)
            _clear_sampled()
            return
        storage = self.storage
        storage.listeners.append(_on_state_change)
        _on_state_change(storage.available)
        while True:
            try:
                await self.sample(storage)
            except Exception as exc:  # a surprise in INFO must not stop sampling for good
                log.warning("Redis sampling failed: %s", exc)
            await asyncio.sleep(self.interval)

    @staticmethod
    async def sample(storage: ResilientBackend) -> None:
        """Read Redis's figures once into the gauges (NaN while Redis is unreachable)."""
        figures = await storage.figures()
        if figures is None:
            _clear_sampled()
            return
        latency, info = figures
        metrics.REDIS_LATENCY.set(latency)
        metrics.REDIS_OPS_PER_SECOND.set(float(info.get("instantaneous_ops_per_sec") or 0))
        metrics.REDIS_CONNECTED_CLIENTS.set(float(info.get("connected_clients") or 0))
        metrics.REDIS_USED_MEMORY.set(float(info.get("used_memory") or 0))
        metrics.REDIS_MAXMEMORY.set(float(info.get("maxmemory") or 0))


def _on_state_change(available: bool) -> None:
    metrics.REDIS_FALLBACK.set(0 if available else 1)
    if not available:
        _clear_sampled()


def _clear_sampled() -> None:
    for gauge in metrics.REDIS_SAMPLED:
        gauge.set(math.nan)
