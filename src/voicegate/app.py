"""The ASGI application: construction is cheap, I/O happens in the lifespan.

HTTP routes are FastAPI's; the voice WebSockets are served by the transport in `server/`, which
finds the voice service (and the bounds on request heads) in the lifespan's state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from voicegate._retry import Backoff
from voicegate.auth import Authenticator
from voicegate.config import Settings, load_settings
from voicegate.engines import engine_from_settings
from voicegate.ops.metrics import SESSION_MAX_SECONDS, forget_this_worker
from voicegate.ops.monitoring import RedisSampler
from voicegate.ops.sentry import flush_sentry, init_sentry
from voicegate.routes import dev_router, router
from voicegate.server.http import HeadLimits
from voicegate.storage import create_backend
from voicegate.voice.service import VoiceService

log = logging.getLogger("voicegate")

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (read from the environment when omitted)."""
    settings = settings or load_settings()
    init_sentry(settings)
    storage = create_backend(
        settings.redis_target if settings.redis_enabled else None,
        op_timeout=settings.redis_op_timeout,
        backoff=Backoff.from_settings(settings),
    )
    authenticator = Authenticator(settings, storage)
    service = VoiceService(settings, storage, engine_from_settings(settings), authenticator)
    limits = HeadLimits(
        settings.http_max_header_bytes,
        settings.http_max_headers,
        settings.http_head_timeout_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # 1. Connect to Redis, or say why not and serve from memory.
        if not settings.redis_enabled:
            log.info("ℹ️ REDIS_ENABLED=false: sessions and rate limits are kept in memory")
        await storage.start()
        # 2. Sample Redis's figures for /metrics in the background (a scrape never waits).
        sampler = RedisSampler(storage, settings.metrics_sample_seconds)
        sampler.start()
        SESSION_MAX_SECONDS.set(settings.voice_max_session_seconds)
        # 3. One heartbeat renews the leases of every voice connection of this process.
        service.start()
        log.info("voicegate %s ready: engine %s", settings.app_version, settings.engine_name)
        yield {"voice": service, "head_limits": limits}
        # 1. Stop admitting; tell live clients to reconnect (uvicorn's shutdown already asked
        #    each connection to drain; this catches any that were still being admitted).
        await service.drain()
        # 2. Stop the heartbeat and sampling (no connection is left to renew).
        await service.close()
        await sampler.stop()
        await authenticator.aclose()
        # 3. Close the Redis pool last: the drain above saved the session records through it.
        await storage.close()
        # 4. Send Sentry what it still holds: the process may end before atexit handlers run.
        await flush_sentry()
        # 5. With several workers, this one's sessions and fallback state stop counting.
        forget_this_worker()

    app = FastAPI(
        title="voicegate",
        version=settings.app_version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.voice = service
    app.include_router(router)
    if not settings.is_production:
        app.include_router(dev_router)
    return app
