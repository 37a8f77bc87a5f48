"""Where the gateway keeps sessions, rate limits, leases, resumable sessions and small values.

`create_backend` is the one place that names concrete backends; everything else is typed
against `StateBackend`.
"""

from __future__ import annotations

from voicegate._retry import Backoff
from voicegate.storage.base import (
    Decision,
    Lease,
    LeaseRef,
    RateWindow,
    RedisFigures,
    SessionRecord,
    StateBackend,
    ValueKind,
)
from voicegate.storage.client import client_for
from voicegate.storage.memory import MemoryBackend
from voicegate.storage.redis import RedisBackend
from voicegate.storage.resilient import ResilientBackend
from voicegate.storage.target import RedisTarget

__all__ = [
    "Decision",
    "Lease",
    "LeaseRef",
    "MemoryBackend",
    "RateWindow",
    "RedisBackend",
    "RedisFigures",
    "RedisTarget",
    "ResilientBackend",
    "SessionRecord",
    "StateBackend",
    "ValueKind",
    "client_for",
    "create_backend",
]


def create_backend(
    target: RedisTarget | None, *, op_timeout: float, backoff: Backoff
) -> StateBackend:
    """Memory alone when `target` is None (`REDIS_ENABLED=false`), else Redis with the memory
    fallback. Nothing connects here: `start()` does, in the app's lifespan."""
    if target is None:
        return MemoryBackend()
    # Socket timeouts a little above the per-command bound: the bound is enforced above them.
    client = client_for(target, timeout=max(op_timeout * 2, 0.5))
    return ResilientBackend(
        RedisBackend(client, secrets=target.secrets),
        op_timeout=op_timeout,
        backoff=backoff,
        masked_url=target.masked,
    )
