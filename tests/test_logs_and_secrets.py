"""Log hygiene: text and JSON lines, a masked access log, and no secret anywhere it could leak."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients import b64, make_token, open_voice, pcm, refused
from tests.redis_server import RedisServer
from tests.sentry_standin import SentryStandin, event_message
from tests.servers import TEST_JWT_SECRET, ServerProcess
from tests.standin_openai import StandinOpenAI
from voicegate.ops.logs import MaskingFormatter

GatewayFactory = Callable[..., ServerProcess]
API_KEY = "sk-test-secret-api-key-0123456789abcdef"


def json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def test_json_lines_are_masked_before_encoding() -> None:
    secret = 'pa"ss\\wo rd'  # JSON would escape the quote and the backslash
    formatter = MaskingFormatter((secret,), json_lines=True)
    try:
        raise RuntimeError(f"AUTH {secret} refused")
    except RuntimeError:
        record = logging.LogRecord(
            "voicegate.test", logging.ERROR, __file__, 1, "login with %s failed", (secret,),
            sys.exc_info(),
        )  # fmt: skip
    line = formatter.format(record)
    entry = json.loads(line)
    assert entry["message"] == "login with *** failed"
    assert "RuntimeError: AUTH *** refused" in entry["exception"]
    assert secret not in json.dumps(entry) and secret not in line


def test_third_party_loggers_are_masked_too(tmp_path: Path) -> None:
    """A library's warning goes through the same masking handler, not Python's last resort."""
    code = (
        "import logging\n"
        "from voicegate.config import load_settings\n"
        "from voicegate.ops.logs import configure_logging\n"
        "configure_logging(load_settings())\n"
        "logging.getLogger('redis.connection').warning('lost redis://:hunter2-pw@db:6379/0')\n"
        "logging.getLogger('websockets.client').info('not shown: below WARNING')\n"
    )
    env = {"REDIS_URL": "redis://:hunter2-pw@db:6379/0", "PATH": "", "LOG_FORMAT": "text"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "WARNING redis.connection: lost redis://default:***@db:6379/0" in result.stderr
    assert "hunter2-pw" not in result.stderr and "not shown" not in result.stderr


async def test_json_format_writes_one_object_per_line(server_factory: GatewayFactory) -> None:
    gateway = server_factory({"REDIS_ENABLED": "false", "LOG_FORMAT": "json"})
    client = await open_voice(gateway, make_token("json-user"))
    await client.close()
    assert httpx.get(f"{gateway.http}/livez").status_code == 200
    gateway.stop()
    entries = json_lines(gateway.log)  # every line parses
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    messages = {entry["message"] for entry in entries}
    assert "ℹ️ Sentry DSN not configured, error tracking disabled" in messages
    started = next(e for e in entries if e["message"].startswith("Voice session "))
    assert started["logger"] == "voicegate.session"
    assert started["session_id"] == client.session_id and started["engine"] == "local"
    assert any(e["logger"] == "uvicorn.access" and "GET /livez" in e["message"] for e in entries)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_access_log_never_shows_the_token(
    server_factory: GatewayFactory, log_format: str
) -> None:
    gateway = server_factory({"REDIS_ENABLED": "false", "LOG_FORMAT": log_format})
    token = make_token("access-log-user")
    opaque = "opaque-token-value-42"  # not JWT-shaped: masked because of where it is
    client = await open_voice(gateway, token)
    await client.close()
    assert await refused(gateway, opaque) == (4001, "Malformed token")
    assert httpx.get(f"{gateway.http}/api/v1/voice/health?token={token}").status_code == 200
    assert httpx.get(f"{gateway.http}/livez?session_id=s1&token={opaque}").status_code == 200
    gateway.stop()
    log = gateway.log
    assert token not in log and token.split(".")[2] not in log
    assert opaque not in log
    # The requests are logged, with the token masked rather than the line dropped.
    assert "GET /api/v1/voice/health?token=*** HTTP/1.1" in log
    assert "GET /livez?session_id=s1&token=*** HTTP/1.1" in log
    assert "WebSocket /api/v1/ws/voice?token=***" in log


async def test_no_secret_in_logs_responses_metrics_messages_or_sentry(
    sentry: SentryStandin,
    redis_server_with_password: RedisServer,
    server_factory: GatewayFactory,
) -> None:
    redis = redis_server_with_password
    password = redis.password
    assert password is not None
    token = make_token("secret-keeper", email="keeper@example.com")
    async with StandinOpenAI(valid_key=API_KEY) as upstream:
        gateway = server_factory({
            "REDIS_URL": redis.url,
            "VOICE_ENGINE": "openai", "OPENAI_API_KEY": API_KEY,
            "OPENAI_REALTIME_URL": upstream.url,
            "SENTRY_DSN": sentry.dsn, "SENTRY_ENVIRONMENT": "secrets-check",
            "SENTRY_TRACES_SAMPLE_RATE": "1.0",
        })  # fmt: skip
        returned: list[str] = []  # every body and message the gateway sent back

        def get(path: str) -> str:
            response = httpx.get(
                f"{gateway.http}{path}", headers={"Authorization": f"Bearer {token}"}
            )
            returned.append(response.text)
            return response.text

        health = json.loads(get(f"/api/v1/voice/health?token={token}"))
        assert health["redis"]["redis_url"] == f"redis://default:***@127.0.0.1:{redis.port}"
        assert health["openai_configured"] is True

        client = await open_voice(gateway, token)
        returned.append(json.dumps(client.first))
        await client.send({"type": "input_audio_buffer.append", "audio": b64(pcm(0.2))})
        await client.send({"type": "input_audio_buffer.commit"})
        await client.send({"type": "response.create"})
        returned += map(json.dumps, await client.recv_until("response.done"))
        await client.send(f'{{"type": "bogus", "token": "{token}", "key": "{API_KEY}"}}')
        returned.append(json.dumps(await client.recv_until("error")))
        # A real failure inside the session, so that Sentry gets an error event with context.
        redis.stop()
        await sentry.wait_for_async(lambda e: "Redis connection failed" in event_message(e))
        assert json.loads(get("/api/v1/voice/health"))["status"] == "degraded"
        get("/metrics")
        get("/readyz")
        await client.close()
        gateway.stop()  # flushes Sentry's queue before the process ends

    log = gateway.log
    leaks = {
        "server log": log,
        "responses and messages": "\n".join(returned),
        "sentry": sentry.raw_text(),
    }
    secrets = {
        "Redis password": password,
        "JWT": token,
        "JWT signature": token.split(".")[2],
        "API key": API_KEY,
        "JWT secret": TEST_JWT_SECRET,
    }
    found = [(what, where) for what, s in secrets.items() for where, t in leaks.items() if s in t]
    assert found == []
    assert sentry.payloads("event") and sentry.payloads("transaction")  # the scan saw real ones
    # Contract §2, with the password masked.
    assert f"✅ Redis connected successfully: redis://default:***@127.0.0.1:{redis.port}" in log
    assert "✅ Sentry initialized: secrets-check" in log
    assert "❌ Redis connection failed: " in log
    assert "⚠️ Falling back to in-memory session storage" in log
