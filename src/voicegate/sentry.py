"""Sentry error tracking through sentry-sdk's own FastAPI, Starlette and logging integrations."""

from __future__ import annotations

import logging

import sentry_sdk

from voicegate.config import Settings

log = logging.getLogger("voicegate")


def init_sentry(settings: Settings) -> bool:
    """Start error tracking when `SENTRY_DSN` is set; log which of the two it is."""
    environment = settings.sentry_environment or settings.app_env
    if settings.sentry_dsn is None:
        log.info("ℹ️ Sentry DSN not configured, error tracking disabled")
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=environment,
        release=settings.app_version,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        send_default_pii=False,
    )
    log.info("✅ Sentry initialized: %s", environment)
    return True
