"""The ASGI application: construction is cheap, I/O happens in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from voicegate.auth.tokens import TokenVerifier
from voicegate.config import Settings, load_settings
from voicegate.engines import engine_from_settings
from voicegate.ops.monitoring import RedisSampler
from voicegate.ops.sentry import flush_sentry, init_sentry
from voicegate.routes import dev_router, router
from voicegate.storage import ResilientBackend, backend_from_settings
from voicegate.voice.service import Gateway

log = logging.getLogger("voicegate")

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (read from the environment when omitted)."""
    settings = settings or load_settings()
    init_sentry(settings)
    gateway = Gateway(
        settings,
        backend_from_settings(settings),
        engine_from_settings(settings),
        TokenVerifier(settings),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = gateway.storage
        # 1. Connect to Redis, or say why not and serve from memory.
        if isinstance(storage, ResilientBackend):
            await storage.start()
        else:
            log.info("ℹ️ REDIS_ENABLED=false: sessions and rate limits are kept in memory")
        # 2. Sample Redis's figures for /metrics in the background (a scrape never waits).
        sampler = RedisSampler(storage, settings.metrics_sample_seconds)
        sampler_task = asyncio.create_task(sampler.run(), name="redis-sampler")
        # 3. One heartbeat renews the leases of every voice connection of this process.
        heartbeat = asyncio.create_task(gateway.keep_leases(), name="lease-heartbeat")
        log.info("voicegate %s ready: engine %s", settings.app_version, settings.engine_name)
        gateway.ready = True
        yield
        # 1. Stop admitting; tell live clients to reconnect elsewhere (already done when the
        #    server drained before closing connections).
        await gateway.drain()
        # 2. Stop sampling and the heartbeat (no connection is left to renew).
        sampler_task.cancel()
        heartbeat.cancel()
        await asyncio.gather(sampler_task, heartbeat, return_exceptions=True)
        # 3. Close the Redis pool last: the drain above saved the session records through it.
        await storage.close()
        # 4. Send Sentry what it still holds: the process may end before atexit handlers run.
        await flush_sentry()

    app = FastAPI(
        title="voicegate", version=settings.app_version, lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )  # fmt: skip
    app.state.gateway = gateway
    app.include_router(router)
    if not settings.is_production:
        app.include_router(dev_router)
    return app
