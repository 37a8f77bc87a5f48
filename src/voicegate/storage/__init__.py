"""Where the gateway keeps sessions, rate limits and leases."""

from __future__ import annotations

from voicegate.config import Settings
from voicegate.storage.base import (
    Decision,
    Lease,
    RateLimiter,
    SessionRecord,
    SessionStore,
    StateBackend,
)
from voicegate.storage.memory import MemoryBackend
from voicegate.storage.redis import RedisBackend, client_from_url
from voicegate.storage.resilient import ResilientBackend

__all__ = [
    "Decision",
    "Lease",
    "MemoryBackend",
    "RateLimiter",
    "RedisBackend",
    "ResilientBackend",
    "SessionRecord",
    "SessionStore",
    "StateBackend",
    "backend_from_settings",
]


def backend_from_settings(settings: Settings) -> MemoryBackend | ResilientBackend:
    """Memory alone when `REDIS_ENABLED=false`, else Redis with the memory fallback.

    Nothing connects here; `ResilientBackend.start()` does, in the app's lifespan.
    """
    if not settings.redis_enabled:
        return MemoryBackend()
    url = settings.redis_url.get_secret_value()
    # Socket timeouts a little above the per-command bound: the bound is enforced above them.
    client = client_from_url(url, timeout=max(settings.redis_op_timeout * 2, 0.5))
    return ResilientBackend(RedisBackend(client), settings)
