"""Prometheus metrics, served at `/metrics`. Names are prefixed `voicegate_`.

Each process keeps its own figures in memory (prometheus-client's default registry): run one
`voicegate serve` process per instance and let Prometheus scrape every instance. Counters are
exposed with the `_total` suffix (`voicegate_sessions_admitted_total`), histograms as `_bucket`,
`_sum` and `_count`. `deploy/prometheus-rules.yml` alerts on these names.

Who updates what:

    sessions (active, admitted, rejected by reason, resumed)   gateway.py, relay.py
    relay messages and bytes by direction                      relay.py, each heartbeat and at
                                                               the end of a connection
    upstream connects, failures by cause, reconnects           gateway.py, relay.py
    Redis command latency, write-back                          storage/resilient.py
    fallback state and the sampled Redis figures               monitoring.RedisSampler, in the
                                                               background: a scrape never waits
                                                               on Redis
"""

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
    "Latency of the Redis operations the gateway issues (one command or script each), "
    "including those that failed or timed out",
    ["command"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
REDIS_FALLBACK = Gauge(
    "voicegate_redis_fallback", "1 while sessions are served from memory because Redis is down"
)
REDIS_WRITEBACK = Counter(
    "voicegate_redis_writeback", "Records and hits written back to Redis after an outage"
)
# Sampled from INFO and a timed PING; NaN while Redis is unreachable (a stale figure would
# look current, and NaN compares false, so no threshold alert fires on it).
REDIS_OPS_PER_SECOND = Gauge("voicegate_redis_ops_per_second", "Redis instantaneous_ops_per_sec")
REDIS_CONNECTED_CLIENTS = Gauge("voicegate_redis_connected_clients", "Redis connected_clients")
REDIS_USED_MEMORY = Gauge("voicegate_redis_used_memory_bytes", "Redis used_memory")
REDIS_MAXMEMORY = Gauge("voicegate_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)")
REDIS_LATENCY = Gauge("voicegate_redis_latency_ms", "Round trip of a PING to Redis, sampled")
REDIS_SAMPLED = (
    REDIS_OPS_PER_SECOND,
    REDIS_CONNECTED_CLIENTS,
    REDIS_USED_MEMORY,
    REDIS_MAXMEMORY,
    REDIS_LATENCY,
)

# Known label values are created up front, so their series exist at 0 from the start: `rate()`
# and `increase()` then see the first refusal, instead of a series that appears at 1.
for _reason in (
    "feature_disabled", "draining", "auth", "plan", "session_not_found", "rate_limit",
    "concurrency", "upstream",
):  # fmt: skip  # the reasons of gateway.Gateway._refuse
    SESSIONS_REJECTED.labels(_reason)
for _direction in ("client_to_engine", "engine_to_client"):
    RELAY_MESSAGES.labels(_direction)
    RELAY_BYTES.labels(_direction)
