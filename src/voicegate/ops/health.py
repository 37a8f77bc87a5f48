"""The health report of contract §3 and the monitoring thresholds of the deployment guide."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from voicegate.config import Settings
from voicegate.storage import MemoryBackend, ResilientBackend

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


def alerts_for(info: dict[str, Any], latency_ms: float | None) -> list[Alert]:
    """The thresholds that Redis's `INFO` figures and the measured latency cross now."""
    alerts: list[Alert] = []
    maxmemory = int(info.get("maxmemory") or 0)
    if maxmemory > 0:
        percent = round(100 * int(info.get("used_memory") or 0) / maxmemory, 1)
        if percent > THRESHOLDS["redis_memory_percent"]:
            alerts.append(
                Alert("redis_memory_percent", percent, THRESHOLDS["redis_memory_percent"])
            )
    clients = int(info.get("connected_clients") or 0)
    if clients > THRESHOLDS["redis_connected_clients"]:
        alerts.append(
            Alert("redis_connected_clients", clients, THRESHOLDS["redis_connected_clients"])
        )
    if latency_ms is not None and latency_ms > THRESHOLDS["redis_latency_ms"]:
        alerts.append(Alert("redis_latency_ms", latency_ms, THRESHOLDS["redis_latency_ms"]))
    return alerts


async def redis_report(
    settings: Settings, storage: MemoryBackend | ResilientBackend
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
    figures = await storage.figures() if isinstance(storage, ResilientBackend) else None
    if figures is None:
        return report, []
    latency, info = round(figures[0], 2), figures[1]
    report.update(
        redis_available=True,
        using_fallback=False,
        redis_version=info.get("redis_version"),
        connected_clients=info.get("connected_clients"),
        used_memory_human=info.get("used_memory_human"),
        latency_ms=latency,
    )
    return report, alerts_for(info, latency)


async def health_report(
    settings: Settings, storage: MemoryBackend | ResilientBackend
) -> dict[str, Any]:
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
