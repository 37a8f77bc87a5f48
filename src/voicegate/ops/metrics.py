"""Prometheus metrics, served at `/metrics`. Names are prefixed `voicegate_`.

A `voicegate serve` process keeps its figures in memory (prometheus-client's default registry);
with `--workers N` each worker writes them to a shared directory and a scrape adds them up
(prometheus-client's multiprocess mode): sessions open are summed over live workers, Redis's
sampled figures are the most recent any worker read. Let Prometheus scrape every instance.
Counters are exposed with the `_total` suffix (`voicegate_sessions_admitted_total`), histograms
as `_bucket`, `_sum` and `_count`. `deploy/prometheus-rules.yml` alerts on these names.

Who updates what:

    sessions (active, admitted, rejected by reason, resumed)   voice/admission.py,
                                                               voice/connection.py
    relay messages and bytes by direction                      voice/connection.py, flushed each
                                                               heartbeat and at the end
    upstream connects, failures by cause, reconnects           voice/engine_link.py
    Redis command latency, errors, fallbacks, write-back       storage/circuit.py, journal.py
    the connection cap (VOICE_MAX_SESSION_SECONDS)             app.py, at start
    fallback state and the sampled Redis figures               ops/monitoring.py, in the
                                                               background: a scrape never waits
                                                               on Redis
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# prometheus-client's own switch to multiprocess mode, set by `voicegate serve --workers N`.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

SESSIONS_ACTIVE = Gauge(
    "voicegate_sessions_active", "Voice connections open", multiprocess_mode="livesum"
)
SESSIONS_ADMITTED = Counter("voicegate_sessions_admitted", "New voice sessions admitted")
SESSIONS_REJECTED = Counter(
    "voicegate_sessions_rejected", "Voice connections refused, by reason", ["reason"]
)
SESSIONS_RESUMED = Counter("voicegate_sessions_resumed", "Voice sessions resumed by session_id")
# Configuration, not a measurement: lets `voicegate verify --long` tell whether the cap would end
# its session before the run does (no other public surface announces it).
SESSION_MAX_SECONDS = Gauge(
    "voicegate_session_max_seconds",
    "Longest single voice connection (VOICE_MAX_SESSION_SECONDS)",
    multiprocess_mode="livemax",
)
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
    "voicegate_redis_fallback",
    "1 while sessions are served from memory because Redis is down",
    multiprocess_mode="livemax",
)
# Every Redis operation that failed or exceeded REDIS_OP_TIMEOUT_MS (reconnect probes during an
# outage included), and every switch to the memory fallback: the "no repeated Redis errors"
# of the deployment guide's 24-hour checks, as figures rather than log lines to count.
REDIS_ERRORS = Counter(
    "voicegate_redis_errors", "Redis operations that failed or timed out (probes included)"
)
REDIS_FALLBACKS = Counter(
    "voicegate_redis_fallbacks", "Switches to the in-memory fallback (Redis outages begun)"
)
REDIS_WRITEBACK = Counter(
    "voicegate_redis_writeback", "Records and hits written back to Redis after an outage"
)
# Sampled from INFO and a timed PING; NaN while Redis is unreachable (a stale figure would
# look current, and NaN compares false, so no threshold alert fires on it).
REDIS_OPS_PER_SECOND = Gauge(
    "voicegate_redis_ops_per_second",
    "Redis instantaneous_ops_per_sec",
    multiprocess_mode="livemostrecent",
)
REDIS_CONNECTED_CLIENTS = Gauge(
    "voicegate_redis_connected_clients",
    "Redis connected_clients",
    multiprocess_mode="livemostrecent",
)
REDIS_USED_MEMORY = Gauge(
    "voicegate_redis_used_memory_bytes", "Redis used_memory", multiprocess_mode="livemostrecent"
)
REDIS_MAXMEMORY = Gauge(
    "voicegate_redis_maxmemory_bytes",
    "Redis maxmemory (0: no limit)",
    multiprocess_mode="livemostrecent",
)
REDIS_LATENCY = Gauge(
    "voicegate_redis_latency_ms",
    "Round trip of a PING to Redis, sampled",
    multiprocess_mode="livemostrecent",
)
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
    "feature_disabled",
    "draining",
    "auth",
    "plan",
    "plan_lookup",
    "session_not_found",
    "recovering",
    "rate_limit",
    "concurrency",
    "upstream",
):  # the reasons of voice/admission.py
    SESSIONS_REJECTED.labels(_reason)
for _direction in ("client_to_engine", "engine_to_client"):
    RELAY_MESSAGES.labels(_direction)
    RELAY_BYTES.labels(_direction)


def exposition() -> bytes:
    """The text of `GET /metrics`: this process's figures, or every worker's when `serve
    --workers N` runs several processes (it sets prometheus-client's PROMETHEUS_MULTIPROC_DIR,
    where each worker's figures are kept)."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def forget_this_worker() -> None:
    """A worker is exiting: its live gauges (sessions open, fallback) stop counting."""
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
