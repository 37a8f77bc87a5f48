"""`verify --monitoring`: the deployment guide's 24-hour checks, from the gateway's own figures.

The health report and /metrics are read every few seconds over a short window; each check is a
judgement of those readings:

    Redis ops/s     Redis's instantaneous_ops_per_sec, as the gateway samples it: stable, i.e.
                    every reading between half and twice the median, give or take 20 ops/s (a
                    quiet Redis's figure jumps by a few with every session that starts or ends)
    Redis memory    used_memory under 50 % of maxmemory; a Redis without maxmemory fails: there
                    is nothing to be under 50 % of, and the 80 % alert can never fire
    Redis latency   the health report's timed PING: median under 10 ms
    Redis errors    voicegate_redis_errors_total / _fallbacks_total: no failed Redis operation
                    during the window, not serving from memory now, at most one outage since
                    the gateway started (one is an incident that recovered; more are repeated)

The counters are the instance's own: behind a load balancer, BASE_URL may reach a different
instance at every read, which shows as figures going backwards; point it at one instance.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from voicegate.cli._gateway import Failed, GatewayClient
from voicegate.cli._progress import Progress

MEMORY_PERCENT = 50.0  # the guide's 24-hour figures, stricter than the alert thresholds
LATENCY_MS = 10.0
QUIET_OPS = 20.0
READINGS = 6  # over the window, at least: one at the start, then every window/5 (5 s at most)


@dataclass
class Reading:
    """One look at the gateway: its health report and its metrics (summed over labels)."""

    at: float
    health: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_status: int = 200


def _sum_by_name(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def _read(gateway: GatewayClient, at: float) -> Reading:
    health = await gateway.get("/api/v1/voice/health")
    if health.status_code != 200:
        raise Failed(f"GET /api/v1/voice/health answered {health.status_code}")
    data = health.json()
    reading = Reading(at, data if isinstance(data, dict) else {})
    metrics = await gateway.get("/metrics")
    reading.metrics_status = metrics.status_code
    if metrics.status_code == 200:
        reading.metrics = _sum_by_name(metrics.text)
    return reading


async def collect(gateway: GatewayClient, seconds: float, progress: Progress) -> list[Reading]:
    """Readings from now until `seconds` later, the first and the last included."""
    interval = min(5.0, seconds / (READINGS - 1))
    started = time.monotonic()
    readings: list[Reading] = []
    while True:
        readings.append(await _read(gateway, time.monotonic() - started))
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            return readings
        progress.update(f"⏳ Monitoring: {elapsed:.0f} / {seconds:g} s, {len(readings)} readings")
        await asyncio.sleep(min(interval, seconds - elapsed))  # the pace of the readings


class Judge:
    """The four checks over a window's readings: each returns its ✅ text or raises `Failed`."""

    def __init__(self, readings: list[Reading]) -> None:
        self.readings = readings
        self.first, self.last = readings[0], readings[-1]
        self.window = self.last.at - self.first.at
        redis = self.last.health.get("redis")
        self.redis: dict[str, Any] = redis if isinstance(redis, dict) else {}

    def _need_redis(self) -> None:
        if not self.redis.get("redis_enabled"):
            raise Failed("Redis disabled (REDIS_ENABLED=false): no Redis figures to judge")

    def _need_metrics(self, name: str) -> list[float]:
        """`name` in every reading that has it; `Failed` when /metrics was never readable."""
        if self.last.metrics_status != 200:
            raise Failed(
                f"GET /metrics answered {self.last.metrics_status}: these figures are "
                "read there (allow it from this host)"
            )
        values = [r.metrics[name] for r in self.readings if name in r.metrics]
        if not values:
            raise Failed(f"{name} is not in /metrics (a gateway older than this command?)")
        return values

    def _rate(self, name: str) -> float | None:
        """Per second over the window, for a counter; None when it cannot be told."""
        start, end = self.first.metrics.get(name), self.last.metrics.get(name)
        if start is None or end is None or self.window <= 0 or end < start:
            return None
        return (end - start) / self.window

    def ops(self) -> str:
        self._need_redis()
        values = [v for v in self._need_metrics("voicegate_redis_ops_per_second") if v == v]
        if not values:
            raise Failed("no reading: Redis was unreachable for the whole window")
        low, high, median = min(values), max(values), statistics.median(values)
        spread = f"{low:.1f}–{high:.1f} ops/s over {self.window:.0f} s, {len(values)} readings"
        if high > 2 * median + QUIET_OPS or low < median / 2 - QUIET_OPS:
            raise Failed(
                f"unstable: {spread}, median {median:.1f}: a reading beyond half or "
                "twice the median (a burst of sessions, another client of this Redis, "
                "or traffic gone?)"
            )
        own = self._rate("voicegate_redis_command_seconds_count")
        mine = f"; the gateway's own operations {own:.1f}/s" if own is not None else ""
        return f"stable, median {median:.1f} ops/s ({spread}{mine})"

    def memory(self) -> str:
        self._need_redis()
        used = self._need_metrics("voicegate_redis_used_memory_bytes")[-1]
        limit = self._need_metrics("voicegate_redis_maxmemory_bytes")[-1]
        if math.isnan(used) or math.isnan(limit):
            raise Failed("no reading: Redis unreachable at the end of the window")
        if limit <= 0:
            raise Failed(
                f"{_size(used)} used, but Redis has no maxmemory: there is nothing to be "
                "under 50 % of, and the 80 % alert can never fire; set maxmemory on "
                "Redis"
            )
        percent = 100 * used / limit
        figures = f"{percent:.1f} % of maxmemory ({_size(used)} of {_size(limit)})"
        if percent >= MEMORY_PERCENT:
            raise Failed(
                f"{figures}: not under the guide's {MEMORY_PERCENT:g} %; raise "
                "maxmemory, or look for keys without a TTL"
            )
        return f"{figures}, under {MEMORY_PERCENT:g} %"

    def latency(self) -> str:
        self._need_redis()
        pings = [
            float(r.health["redis"]["latency_ms"])
            for r in self.readings
            if isinstance(r.health.get("redis"), dict)
            and isinstance(r.health["redis"].get("latency_ms"), int | float)
        ]
        if not pings:
            raise Failed("no timed PING in the health reports: Redis unreachable")
        median, worst = statistics.median(pings), max(pings)
        detail = f"max {worst:.2f} ms over {len(pings)} timed PINGs"
        seconds = self._rate("voicegate_redis_command_seconds_sum")
        count = self._rate("voicegate_redis_command_seconds_count")
        if seconds is not None and count:
            detail += f"; the gateway's own operations {seconds / count * 1000:.2f} ms on average"
        if median >= LATENCY_MS:
            raise Failed(
                f"median {median:.2f} ms, not under the guide's {LATENCY_MS:g} ms "
                f"({detail}): Redis far from the gateway, or overloaded?"
            )
        return f"median {median:.2f} ms, under {LATENCY_MS:g} ms ({detail})"

    def errors(self) -> str:
        self._need_redis()
        errors = self._need_metrics("voicegate_redis_errors_total")
        outages = self._need_metrics("voicegate_redis_fallbacks_total")
        if errors != sorted(errors) or outages != sorted(outages):
            raise Failed(
                "the counters went backwards: the gateway restarted, or BASE_URL reaches "
                "several instances (point it at one)"
            )
        new, total, outage_count = errors[-1] - errors[0], errors[-1], outages[-1]
        since = (
            f"{_count(total, 'failed Redis operation')} and "
            f"{_count(outage_count, 'outage')} since start"
        )
        started = self.last.metrics.get("process_start_time_seconds")
        if started is not None:
            since += f" ({_duration(time.time() - started)} ago)"
        if self.redis.get("using_fallback"):
            raise Failed(f"serving from memory now (Redis unavailable); {since}")
        if new > 0:
            raise Failed(
                f"{_count(new, 'Redis operation')} failed during the "
                f"{self.window:.0f} s window; {since}"
            )
        if outage_count > 1:
            raise Failed(
                f"repeated: {since}; the gateway's log has a `❌ Redis connection "
                "failed` line for each outage"
            )
        recovered = ", recovered" if outage_count == 1 else ""
        return f"none during the {self.window:.0f} s window; {since}{recovered}"


def _size(value: float) -> str:
    """Bytes as a person reads them, in powers of 1024 as Redis counts: 1.2 MiB."""
    if value < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def _count(number: float, thing: str) -> str:
    return f"{number:g} {thing}" if number == 1 else f"{number:g} {thing}s"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
