"""Prometheus metrics (served at `/metrics`). Names are prefixed `voicegate_`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SESSIONS_ACTIVE = Gauge("voicegate_sessions_active", "Voice connections open on this process")
SESSIONS_ADMITTED = Counter("voicegate_sessions_admitted", "New voice sessions admitted")
SESSIONS_REJECTED = Counter(
    "voicegate_sessions_rejected", "Voice connections refused, by reason", ["reason"]
)
SESSIONS_RESUMED = Counter("voicegate_sessions_resumed", "Voice sessions resumed by session_id")
RELAY_MESSAGES = Counter(
    "voicegate_relay_messages", "Messages relayed, by direction", ["direction"]
)
RELAY_BYTES = Counter("voicegate_relay_bytes", "Bytes relayed, by direction", ["direction"])
UPSTREAM_CONNECTS = Counter("voicegate_upstream_connects", "Engine connections opened", ["engine"])
UPSTREAM_FAILURES = Counter(
    "voicegate_upstream_failures", "Engine connection failures, by class", ["engine", "cause"]
)
UPSTREAM_RECONNECTS = Counter(
    "voicegate_upstream_reconnects", "Engine connections restored mid-session", ["engine"]
)
REDIS_COMMAND_SECONDS = Histogram(
    "voicegate_redis_command_seconds",
    "Latency of Redis commands issued by the gateway",
    ["command"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
REDIS_FALLBACK = Gauge(
    "voicegate_redis_fallback", "1 while sessions are served from memory because Redis is down"
)
REDIS_WRITEBACK = Counter(
    "voicegate_redis_writeback", "Records and hits written back to Redis after an outage"
)
REDIS_OPS_PER_SECOND = Gauge("voicegate_redis_ops_per_second", "Redis instantaneous_ops_per_sec")
REDIS_CONNECTED_CLIENTS = Gauge("voicegate_redis_connected_clients", "Redis connected_clients")
REDIS_USED_MEMORY = Gauge("voicegate_redis_used_memory_bytes", "Redis used_memory")
REDIS_MAXMEMORY = Gauge("voicegate_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)")
REDIS_LATENCY = Gauge("voicegate_redis_latency_ms", "Round trip of a PING to Redis, sampled")
