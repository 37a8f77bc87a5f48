"""Sentry error tracking through sentry-sdk's own FastAPI, Starlette and logging integrations.

What reaches Sentry:

- unhandled exceptions of HTTP routes (the FastAPI/Starlette integrations), with the request's
  method, URL and headers;
- every log record at ERROR or above as an event (the logging integration), records from INFO
  up as breadcrumbs, so an event shows what led to it;
- performance transactions, sampled at `SENTRY_TRACES_SAMPLE_RATE`.

Errors inside a voice session carry the tags `session_id` and `engine` and the user id (from the
log record's context). `SentryGate` keeps one client from flooding error tracking: repeats of one
kind of error per user are dropped, and events are capped per user and overall.

Nothing secret leaves the process: sentry-sdk's own scrubber removes the fields it knows, then
`SentryScrubber` walks every event, transaction and breadcrumb and masks every string with
`mask_text` and the configured secrets (Redis password, API key, JWT secret, the DSN itself),
token query parameters and JWT-shaped values, and drops the values of credential headers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import sentry_sdk
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.redis import RedisIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration

from voicegate._redact import MASK, mask_text
from voicegate.config import Settings

if TYPE_CHECKING:
    from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

__all__ = [
    "FILTERED",
    "SentryGate",
    "SentryScrubber",
    "flush_sentry",
    "init_sentry",
    "sentry_environment",
    "sentry_options",
]

log = logging.getLogger("voicegate")

FILTERED = "[Filtered]"

# Keys whose value is dropped whatever it looks like: credential headers (as sentry-sdk shows
# request headers: a dict, or [name, value] pairs) and obviously named secrets.
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "apikey",
        "openai-api-key",
        "password",
        "passwd",
        "secret",
        "jwt-secret",
        "token",
        "access-token",
        "refresh-token",
    }
)
# A credential in a query string, including one that starts the string (sentry-sdk reports
# `query_string` without its `?`, which `mask_text` alone would not recognise).
_QUERY_SECRET = re.compile(
    r"(?i)(^|[?&;])((?:access_|refresh_)?token|api_?key|key|password|secret|auth)=[^&#\s\"']*"
)
# The first part of a JWT (`eyJ…` header, a dot, anything): masks a token that a length limit
# cut short, which the full-JWT pattern no longer matches.
_JWT_START = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_.-]*")
_MAX_DEPTH = 32  # deeper than any Sentry payload; a cycle in raw breadcrumb data stops here


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("_", "-") in _SECRET_KEYS


class SentryScrubber:
    """Masks secrets in Sentry payloads; its methods are sentry-sdk's `before_*` hooks."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def before_send(self, event: Event, hint: Hint) -> Event:
        """`before_send` and `before_send_transaction`: the whole event, scrubbed."""
        return cast("Event", self.scrub(event))

    def before_breadcrumb(self, crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb:
        """`before_breadcrumb`: the breadcrumb, scrubbed before the scope keeps it."""
        return cast("Breadcrumb", self.scrub(crumb))

    def scrub(self, value: Any, depth: int = 0) -> Any:
        """`value` with every string masked and credential-named entries dropped."""
        if isinstance(value, str):
            return self.text(value)
        if depth > _MAX_DEPTH:
            return FILTERED
        if isinstance(value, dict):
            return {
                self.scrub(k, depth + 1): (
                    FILTERED if _is_secret_key(k) and v is not None else self.scrub(v, depth + 1)
                )
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            if len(value) == 2 and _is_secret_key(value[0]):  # a [name, value] header pair
                items = [value[0], FILTERED]
            else:
                items = [self.scrub(item, depth + 1) for item in value]
            return items if isinstance(value, list) else tuple(items)
        return value  # numbers, booleans, None; raw objects are scrubbed once serialised

    def text(self, text: str) -> str:
        """One string, masked."""
        text = mask_text(text, self._secrets)
        text = _QUERY_SECRET.sub(rf"\1\2={MASK}", text)
        text = _JWT_START.sub(MASK, text)
        # A string cut by a length limit ends in "...": a secret cut there no longer matches
        # whole, so its surviving head is masked too.
        if text.endswith("..."):
            body = text[:-3]
            for secret in self._secrets:
                for size in range(len(secret) - 1, 3, -1):
                    if body.endswith(secret[:size]):
                        return f"{body[:-size]}{MASK}..."
        return text


class SentryGate:
    """Decides which error events leave the process: a client that triggers one error again
    and again (say, by resuming and misbehaving in a loop) must not flood error tracking.

    Per user, one event per kind of error per `repeat_seconds` and `per_user` events a minute;
    overall `per_minute` events a minute. A kind is the exception's type and where it was
    raised, or the log message before its arguments were filled in. The voice session's context
    (`session_id`, `engine`, the user id), which log records carry as extras, becomes the
    event's tags and user.
    """

    def __init__(
        self, *, repeat_seconds: float = 60.0, per_user: int = 5, per_minute: int = 60
    ) -> None:
        self.repeat_seconds = repeat_seconds
        self.per_user = per_user
        self.per_minute = per_minute
        self._last: dict[tuple[str, str], float] = {}
        self._recent: deque[tuple[float, str]] = deque()

    def admit(self, event: Event, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        _lift_context(event)
        user = str((event.get("user") or {}).get("id") or "")
        kind = _kind_of(event)
        while self._recent and self._recent[0][0] <= now - 60:
            self._recent.popleft()
        if len(self._last) > 10_000:  # forget old kinds; a long-running process stays small
            self._last = {k: v for k, v in self._last.items() if v > now - self.repeat_seconds}
        last = self._last.get((user, kind))
        if last is not None and now - last < self.repeat_seconds:
            return False
        if len(self._recent) >= self.per_minute:
            return False
        if user and sum(1 for _, who in self._recent if who == user) >= self.per_user:
            return False
        self._last[(user, kind)] = now
        self._recent.append((now, user))
        return True


def _lift_context(event: Event) -> None:
    extra: dict[str, Any] = dict(event.get("extra") or {})
    tags: dict[str, Any] = dict(event.get("tags") or {})
    for name in ("session_id", "engine"):
        if extra.get(name):
            tags[name] = extra[name]
    event["tags"] = tags
    if extra.get("user_id") and not event.get("user"):
        event["user"] = {"id": extra["user_id"]}


def _kind_of(event: Event) -> str:
    values = (event.get("exception") or {}).get("values") or []
    if values:
        last = values[-1]
        frames = (last.get("stacktrace") or {}).get("frames") or [{}]
        where = f"{frames[-1].get('module')}:{frames[-1].get('lineno')}"
        return f"{last.get('type')}@{where}"
    entry = event.get("logentry") or {}
    return f"{event.get('logger')}:{entry.get('message') or event.get('message')}"


def sentry_environment(settings: Settings) -> str:
    """The environment events carry: `SENTRY_ENVIRONMENT`, else `APP_ENV`."""
    return settings.sentry_environment or settings.app_env


def sentry_options(settings: Settings) -> dict[str, Any]:
    """The arguments of `sentry_sdk.init` for `settings` (which must have a DSN): the server's,
    and those of `voicegate sentry-test`, whose event must travel as the server's would."""
    assert settings.sentry_dsn is not None
    scrubber = SentryScrubber(settings.secret_values())
    gate = SentryGate()

    def before_send(event: Event, hint: Hint) -> Event | None:
        return scrubber.before_send(event, hint) if gate.admit(event) else None

    return {
        "dsn": settings.sentry_dsn.get_secret_value(),
        "environment": sentry_environment(settings),
        "release": settings.app_version,
        "traces_sample_rate": settings.sentry_traces_sample_rate,
        # No PII (IP addresses, cookies, user names): `send_default_pii` stays at its default,
        # False. sentry-sdk >= 2.70 deprecates passing it (a DeprecationWarning) in favour of
        # `data_collection`, which the older releases we support do not know.
        "integrations": [
            StarletteIntegration(),
            FastApiIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        # Auto-enabled because redis-py is installed, it would record every heartbeat of every
        # session (one script call per 2 s): 100 of them push the useful breadcrumbs out of an
        # event, and a long session's transaction fills up with spans. Redis latency is in
        # /metrics; Redis failures are logged, so they are reported anyway.
        "disabled_integrations": [RedisIntegration()],
        "in_app_include": ["voicegate"],
        "before_send": before_send,
        "before_send_transaction": scrubber.before_send,
        "before_breadcrumb": scrubber.before_breadcrumb,
    }


def init_sentry(settings: Settings) -> bool:
    """Start error tracking when `SENTRY_DSN` is set; log which of the two it is."""
    if settings.sentry_dsn is None:
        log.info("ℹ️ Sentry DSN not configured, error tracking disabled")
        return False
    sentry_sdk.init(**sentry_options(settings))
    log.info("✅ Sentry initialized: %s", sentry_environment(settings))
    return True


async def flush_sentry(timeout: float = 2.0) -> None:
    """Send what is still queued, waiting at most `timeout` s (without blocking the loop).

    Called at the end of the shutdown: uvicorn re-raises SIGTERM once it has shut down, which
    ends the process before atexit handlers, sentry-sdk's own flush among them, can run; the
    events of the drain (voice sessions' transactions, errors) would be lost.
    """
    if sentry_sdk.get_client().is_active():
        await asyncio.to_thread(sentry_sdk.flush, timeout)
