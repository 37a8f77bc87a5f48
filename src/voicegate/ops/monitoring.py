"""Background sampling of the Redis figures the deployment guide watches, for `/metrics`."""

from __future__ import annotations

import asyncio
import logging
import math

from voicegate._tasks import stop_task
from voicegate.ops import metrics
from voicegate.storage import StateBackend

__all__ = ["RedisSampler"]

log = logging.getLogger("voicegate.monitoring")


class RedisSampler:
    """Every `interval` seconds, reads `INFO` and a timed `PING` into gauges.

    A scrape of `/metrics` only reads the gauges, so it never waits on Redis. The fallback gauge
    follows the storage's state changes at once, not at the next sample.
    """

    def __init__(self, storage: StateBackend, interval: float) -> None:
        self.storage = storage
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="redis-sampler")

    async def stop(self) -> bool:
        """Stop sampling (bounded); True when the task ended."""
        return await stop_task(self._task)

    async def run(self) -> None:
        """Sample until cancelled (the app's lifespan cancels it at shutdown)."""
        storage = self.storage
        if storage.name == "memory":
            # REDIS_ENABLED=false: memory by choice, not a fallback; there is no Redis to sample.
            metrics.REDIS_FALLBACK.set(0)
            _clear_sampled()
            return
        storage.add_listener(_on_state_change)
        _on_state_change(storage.shared)
        # A cancellation lost inside redis-py (see `voicegate._tasks`) still counts: the loop
        # ends at its next turn instead of waiting for `stop_task` to send it again.
        task = asyncio.current_task()
        while task is None or not task.cancelling():
            try:
                await self.sample(storage)
            except Exception as exc:  # a surprise in INFO must not stop sampling for good
                log.warning("Redis sampling failed: %s", exc)
            await asyncio.sleep(self.interval)

    @staticmethod
    async def sample(storage: StateBackend) -> None:
        """Read Redis's figures once into the gauges (NaN while Redis is unreachable)."""
        figures = await storage.figures()
        if figures is None:
            _clear_sampled()
            return
        metrics.REDIS_LATENCY.set(figures.latency_ms)
        metrics.REDIS_OPS_PER_SECOND.set(figures.ops_per_second or 0.0)
        metrics.REDIS_CONNECTED_CLIENTS.set(figures.connected_clients or 0)
        metrics.REDIS_USED_MEMORY.set(figures.used_memory or 0)
        metrics.REDIS_MAXMEMORY.set(figures.maxmemory or 0)


def _on_state_change(available: bool) -> None:
    metrics.REDIS_FALLBACK.set(0 if available else 1)
    if not available:
        _clear_sampled()


def _clear_sampled() -> None:
    for gauge in metrics.REDIS_SAMPLED:
        gauge.set(math.nan)
