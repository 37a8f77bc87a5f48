"""Sentry: real events from a real server process, received by a real HTTP stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.clients import make_token, open_voice
from tests.redis_server import RedisServer
from tests.sentry_standin import SentryStandin, event_message, parse_envelope
from tests.servers import TEST_JWT_SECRET, Serve, ServerProcess
from tests.standin_openai import StandinOpenAI
from voicegate.ops.sentry import FILTERED, SentryScrubber

GatewayFactory = Callable[..., ServerProcess]

PASSWORD = "s3cret-redis-pass-XYZ"
API_KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"


def secrets_in(text: str, *secrets: str) -> list[str]:
    return [secret for secret in secrets if secret in text]


# -- the scrubber on its own -------------------------------------------------------------------


def test_scrubber_masks_every_string_and_drops_credential_headers() -> None:
    token = make_token("scrub-me")
    scrubber = SentryScrubber((PASSWORD, API_KEY, TEST_JWT_SECRET))
    event: dict[str, Any] = {
        "message": f"connect to redis://:{PASSWORD}@10.0.0.1:6379/0 failed",
        "tags": {"session_id": "abc123", "engine": "local"},
        "request": {
            "url": "ws://gateway/api/v1/ws/voice",
            "query_string": f"token={token}&session_id=abc123",
            "headers": {"Authorization": f"Bearer {token}", "Cookie": "sid=1", "X-Api-Key": "k-1"},
        },
        "extra": {"pairs": [["authorization", "Basic dXNlcjpwYXNz"], ["accept", "*/*"]]},
        "exception": {"values": [{"stacktrace": {"frames": [{"vars": {
            "key": repr(API_KEY), "settings": f"jwt_secret={TEST_JWT_SECRET}",
            "cut_jwt": token[:40] + "...", "cut_password": "x" * 10 + PASSWORD[:12] + "...",
        }}]}}]},
        "breadcrumbs": {"values": [
            {"message": f'127.0.0.1:5 - "GET /api/v1/voice/health?token={token} HTTP/1.1" 200'},
            {"data": {"url": "https://api.example/v1?api_key=live-key-123&x=1"}},
        ]},
    }  # fmt: skip
    scrubbed = scrubber.before_send(event, {})  # type: ignore[arg-type]
    text = json.dumps(scrubbed)
    assert secrets_in(text, PASSWORD, API_KEY, TEST_JWT_SECRET, token, "live-key-123") == []
    assert token.split(".")[1] not in text  # not even the cut JWT's payload
    assert PASSWORD[:12] not in text  # nor the head of a password cut by a length limit
    request = scrubbed["request"]
    assert request["headers"] == {
        "Authorization": FILTERED,
        "Cookie": FILTERED,
        "X-Api-Key": FILTERED,
    }
    assert request["query_string"] == "token=***&session_id=abc123"
    assert scrubbed["extra"]["pairs"] == [["authorization", FILTERED], ["accept", "*/*"]]
    assert scrubbed["tags"] == {"session_id": "abc123", "engine": "local"}  # context survives
    assert scrubbed["message"] == "connect to redis://default:***@10.0.0.1:6379/0 failed"
    crumb = scrubber.before_breadcrumb({"message": f"key {API_KEY}", "level": "info"}, {})
    assert crumb == {"message": "key ***", "level": "info"}


def test_envelope_parser_reads_length_and_newline_items() -> None:
    body = (
        b'{"event_id":"e1"}\n'
        b'{"type":"event","length":8}\n{"a":\n1}\n'
        b'{"type":"client_report"}\n{"discarded_events":[]}\n'
    )
    header, items = parse_envelope(body)
    assert header == {"event_id": "e1"}
    assert [(i.type, i.json()) for i in items] == [
        ("event", {"a": 1}),
        ("client_report", {"discarded_events": []}),
    ]


# -- a real server -----------------------------------------------------------------------------


async def test_error_in_a_voice_session_carries_tags_release_environment(
    sentry: SentryStandin, redis_server: RedisServer, server_factory: GatewayFactory
) -> None:
    upstream = StandinOpenAI()
    await upstream.__aenter__()
    gateway = server_factory({
        "REDIS_URL": redis_server.url, "SENTRY_DSN": sentry.dsn,
        "SENTRY_ENVIRONMENT": "qa", "APP_VERSION": "9.8.7-test",
        "VOICE_ENGINE": "openai", "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": upstream.url,
    })  # fmt: skip
    assert "✅ Sentry initialized: qa" in gateway.log
    token = make_token("sentry-user")
    client = await open_voice(gateway, token)
    # A real failure inside the session: the engine goes away for good; the session cannot
    # reconnect, logs it as an error (which the logging integration reports) and closes 1011.
    await upstream.wait_for_connections(1)
    await upstream.close_connections(1011, "gone")
    await upstream.__aexit__(None, None, None)
    assert (await client.closed(timeout=20))[0] == 1011
    event = await sentry.wait_for_async(
        lambda e: "could not reconnect" in event_message(e), timeout=15
    )
    assert event["level"] == "error"
    assert event["release"] == "9.8.7-test"
    assert event["environment"] == "qa"
    assert event["tags"]["session_id"] == client.session_id
    assert event["tags"]["engine"] == "openai"
    assert event["user"] == {"id": "sentry-user"}  # set by the session, no IP address (no PII)
    integrations = set(event["sdk"]["integrations"])
    assert {"fastapi", "starlette", "logging"} <= integrations
    assert "redis" not in integrations  # its per-heartbeat breadcrumbs would crowd these out
    crumbs = [crumb.get("message", "") for crumb in event["breadcrumbs"]["values"]]
    assert f"Voice session {client.session_id} started for user sentry-user" in crumbs
    assert secrets_in(json.dumps(event), token, TEST_JWT_SECRET, API_KEY) == []
    # Stopping flushes the queue at exit; with the default sample rate 0 no transaction is sent.
    gateway.stop()  # SIGTERM; uvicorn re-raises it once shut down, so atexit never runs
    assert sentry.payloads("transaction") == []
    assert secrets_in(sentry.raw_text(), token, token.split(".")[2], TEST_JWT_SECRET, API_KEY) == []
    assert sentry.bad_requests == []


async def test_sampled_transactions_are_scrubbed_and_flushed_at_shutdown(
    server_factory: GatewayFactory,
) -> None:
    # A slow Sentry: while the SDK waits on one envelope, the next ones queue up in the process.
    with SentryStandin(response_delay=1.0) as sentry:
        gateway = server_factory({
            "REDIS_ENABLED": "false", "SENTRY_DSN": sentry.dsn, "SENTRY_ENVIRONMENT": "staging",
            "APP_ENV": "development", "SENTRY_TRACES_SAMPLE_RATE": "1.0",
        })  # fmt: skip
        assert "✅ Sentry initialized: staging" in gateway.log
        token = make_token("traced-user")
        headers = {"Authorization": f"Bearer {token}", "Cookie": "sid=cookie-value-1",
                   "X-Api-Key": "xk-987654"}  # fmt: skip
        health_url = f"{gateway.http}/api/v1/voice/health?token={token}"
        for _ in range(3):  # queued behind each other while Sentry answers slowly …
            assert httpx.get(health_url, headers=headers).status_code == 200
        gateway.stop()  # … and stopped at once: they arrive only if the shutdown flushes
        health = sentry.wait_for(
            lambda t: t.get("transaction") == "/api/v1/voice/health", kind="transaction"
        )
        assert health["environment"] == "staging"
        assert health["request"]["query_string"] == "token=***"
        sent_headers = {k.lower(): v for k, v in health["request"]["headers"].items()}
        assert sent_headers["authorization"] == sent_headers["x-api-key"] == FILTERED
        assert sent_headers.get("cookie", FILTERED) == FILTERED
        raw = sentry.raw_text()
        assert secrets_in(raw, token, TEST_JWT_SECRET, "cookie-value-1", "xk-987654") == []


async def test_without_dsn_tracking_is_off_and_says_so(serve: Serve) -> None:
    # In process: without a DSN nothing process-wide is set up. (With one, `sentry_sdk.init`
    # would stay in this test process: those cases run `voicegate serve` processes.)
    gateway = await serve(redis_enabled=False)
    assert "ℹ️ Sentry DSN not configured, error tracking disabled" in gateway.log
    assert "Sentry initialized" not in gateway.log
