"""The health report of contract §3 and the monitoring thresholds of the deployment guide."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any

from voicegate.config import Settings
from voicegate.storage import RedisFigures, StateBackend

__all__ = ["THRESHOLDS", "Alert", "alerts_for", "health_report"]

# The guide's alert thresholds; deploy/prometheus-rules.yml uses the same figures.
THRESHOLDS = {
    "redis_memory_percent": 80.0,  # used_memory as a percentage of maxmemory
    "redis_connected_clients": 10,
    "redis_latency_ms": 100.0,
}


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    value: float
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold}


def alerts_for(figures: RedisFigures) -> list[Alert]:
    """The thresholds that Redis's figures cross now."""
    alerts: list[Alert] = []
    maxmemory = figures.maxmemory or 0
    if maxmemory > 0:
        percent = round(100 * (figures.used_memory or 0) / maxmemory, 1)
        if percent > THRESHOLDS["redis_memory_percent"]:
            alerts.append(
                Alert("redis_memory_percent", percent, THRESHOLDS["redis_memory_percent"])
            )
    clients = figures.connected_clients or 0
    if clients > THRESHOLDS["redis_connected_clients"]:
        alerts.append(
            Alert("redis_connected_clients", clients, THRESHOLDS["redis_connected_clients"])
        )
    if figures.latency_ms > THRESHOLDS["redis_latency_ms"]:
        latency = figures.latency_ms
        alerts.append(Alert("redis_latency_ms", latency, THRESHOLDS["redis_latency_ms"]))
    return alerts


async def redis_report(
    settings: Settings, storage: StateBackend
) -> tuple[dict[str, Any], list[Alert]]:
    """The `redis` object of the health report, and the alerts it raises."""
    report: dict[str, Any] = {
        "redis_available": False,
        "redis_enabled": settings.redis_enabled,
        "using_fallback": True,
        "redis_url": settings.redis_url_masked if settings.redis_enabled else None,
        "redis_version": None,
        "connected_clients": None,
        "used_memory_human": None,
        "latency_ms": None,
    }
    # Figures first: while Redis serves, a PING that fails here opens the circuit, and `shared`
    # below says so. In fallback they are still read if Redis answers reads (out of memory).
    figures = await storage.figures()
    report.update(redis_available=storage.shared, using_fallback=not storage.shared)
    if figures is None:
        return report, []
    figures = dataclasses.replace(figures, latency_ms=round(figures.latency_ms, 2))
    report.update(
        redis_version=figures.version,
        connected_clients=figures.connected_clients,
        used_memory_human=figures.used_memory_human,
        latency_ms=figures.latency_ms,
    )
    return report, alerts_for(figures)


async def health_report(settings: Settings, storage: StateBackend) -> dict[str, Any]:
    """`GET /api/v1/voice/health`: always answered, whatever state Redis is in."""
    redis, alerts = await redis_report(settings, storage)
    if not settings.enable_voice_realtime:
        status = "disabled"
    elif settings.redis_enabled and redis["using_fallback"]:
        status = "degraded"
    else:
        status = "healthy"
    return {
        "status": status,
        "feature_enabled": settings.enable_voice_realtime,
        "openai_configured": settings.openai_api_key is not None,
        "weaviate_enabled": bool(settings.weaviate_url),
        "engine": settings.engine_name,
        "version": settings.app_version,
        "redis": redis,
        "alerts": [alert.as_dict() for alert in alerts],
        "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
