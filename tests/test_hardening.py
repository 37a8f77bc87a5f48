"""Hostile and broken clients (issue 10): bounded memory and sockets, prompt answers, no
crossed users, no crash, no flood of error tracking, no forged log line, no leaked key.

Where memory or sockets are read from the server's /proc, and where logs or Sentry are set up
(once per process), the server is a `ServerProcess` of its own; the other cases run in process
(`serve`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from tests.clients import VoiceClient, b64, make_token, open_voice, pcm, refused
from tests.redis_server import RedisServer
from tests.sentry_standin import SentryStandin, event_message
from tests.servers import TEST_JWT_SECRET, Serve, ServerProcess
from tests.standin_openai import StandinOpenAI

Factory = Callable[..., ServerProcess]
MB = 1024 * 1024


def rss(server: ServerProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def open_fds(server: ServerProcess) -> int:
    assert server.process is not None
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


async def raw_request(port: int, data: bytes, *, read: bool = True) -> bytes:
    """Send raw bytes on a fresh TCP connection; what the server answers before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10) if read else b""
    finally:
        writer.close()


async def test_unfinished_heads_cost_bounded_memory_and_are_timed_out(
    server_factory: Factory,
) -> None:
    server = server_factory({"REDIS_ENABLED": "false", "HTTP_HEAD_TIMEOUT_SECONDS": "2"})
    before, fds_before = rss(server), open_fds(server)
    # 20 connections each sending 5 MB of one endless header, 50 an unfinished request line.
    writers = []
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (5 * MB))
        writers.append(writer)
    for _ in range(50):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/v1/voice/health?x=")
        writers.append(writer)
    await asyncio.gather(*(w.drain() for w in writers), return_exceptions=True)
    grown = rss(server) - before
    assert grown < 20 * MB, f"server grew by {grown / MB:.1f} MB"
    # The head timeout closes every one of them.
    async with asyncio.timeout(10):
        while open_fds(server) > fds_before + 2:
            await asyncio.sleep(0.1)
    for writer in writers:
        writer.close()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MB + b"\r\n\r\n", b"431"),
        (
            b"GET /livez HTTP/1.1\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(2000))
            + b"\r\n",
            b"431",
        ),
        (
            b"GET /api/v1/ws/voice?token=" + b"t" * (40 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"414",
        ),
    ],
)
async def test_oversized_heads_are_refused_at_once(
    serve: Serve, head: bytes, status: bytes
) -> None:
    server = await serve(redis_enabled=False)
    answer = await raw_request(server.port, head)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]


async def test_a_long_token_in_the_url_gets_an_answer_at_once(serve: Serve) -> None:
    # A ~9.5 KB token: longer than websockets' 8 KB line, well within the head bound.
    server = await serve(redis_enabled=False)
    token = make_token("long", padding="p" * 9000)
    client = await open_voice(server, token)
    assert client.first is not None and client.first["resumed"] is False
    await client.close()


async def test_a_client_that_reads_nothing_is_closed_and_costs_bounded_memory(
    server_factory: Factory,
) -> None:
    server = server_factory({
        "REDIS_ENABLED": "false", "VOICE_SLOW_CLIENT_SECONDS": "3",
        "VOICE_CLIENT_BUFFER_BYTES": str(256 * 1024),
    })  # fmt: skip
    before = rss(server)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET /api/v1/ws/voice?token={make_token('mute')} HTTP/1.1\r\nHost: x\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    frame = _masked_text(b'{"type":"response.create"}')
    sock.settimeout(0.5)
    sent = 0
    for _ in range(20_000):  # the server stops reading us once its buffer toward us is full
        try:
            sock.sendall(frame)
            sent += 1
        except (TimeoutError, BlockingIOError, OSError):
            break
    grown = rss(server) - before
    assert grown < 30 * MB, f"server grew by {grown / MB:.1f} MB after {sent} messages"
    # Closed within the slow-client bound (the close frame may not get through: we don't read).
    sock.settimeout(None)
    async with asyncio.timeout(15):
        while True:
            await asyncio.sleep(0.2)
            if "1008" in server.log or "not reading" in server.log:
                break
    sock.close()


def _masked_text(payload: bytes) -> bytes:
    """A client text frame (masked with a zero key, which leaves the payload as it is)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def test_binary_frame_over_the_limit_is_1009(serve: Serve) -> None:
    server = await serve(redis_enabled=False, voice_max_message_bytes=4096)
    client = await open_voice(server, make_token())
    await client.send(b"\0" * 5000)
    code, reason = await client.closed()
    assert code == 1009 and "4096" in reason


async def test_small_binary_frames_get_an_error_and_the_session_goes_on(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    client = await open_voice(server, make_token())
    await client.send(b"\x01\x02")
    error = (await client.recv_until("error"))[-1]
    assert error["error"]["code"] == "binary_frame"
    await client.send({"type": "audio.input", "audio": b64(pcm(0.1))})
    await client.send(json.dumps({"type": "input_audio_buffer.commit"}))
    assert (await client.recv_until("response.done"))[-1]["type"] == "response.done"
    await client.close()


# -- in-process servers: admission and protocol ------------------------------------------------

LONE_SURROGATE_ITEM = (
    '{"type":"conversation.item.create","event_id":"cut-emoji","item":{"type":"message",'
    '"role":"user","content":[{"type":"input_text","text":"hi \\ud83d"}]}}'
)


def server_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the in-process server logged as failing: ERROR records and any traceback (an ASGI
    exception, a task that died, a session that failed)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR or record.exc_info
    ]


async def answers(client: VoiceClient) -> None:
    """The session still answers a well-formed event."""
    await client.send({"type": "conversation.item.retrieve", "item_id": "none", "event_id": "ok"})
    error = (await client.recv_until("error"))[-1]["error"]
    assert (error["code"], error["event_id"]) == ("item_retrieve_invalid_item_id", "ok")


@pytest.mark.parametrize("claim", ["sub", "email"])
async def test_a_lone_surrogate_in_a_signed_claim_is_4001(
    serve: Serve, redis_server: RedisServer, caplog: pytest.LogCaptureFixture, claim: str
) -> None:
    server = await serve(redis_url=redis_server.url)
    claims = {"sub": "cut\ud83d"} if claim == "sub" else {"email": "ana\udc00@example.com"}
    token = make_token("surrogate", **claims)  # PyJWT writes it as the JSON escape \ud83d
    code, reason = await refused(server, token)
    assert code == 4001 and f"'{claim}'" in reason, (code, reason)
    assert server_failures(caplog) == []
    # The server goes on admitting others.
    client = await open_voice(server, make_token("after-surrogate"))
    await answers(client)
    await client.close()


async def test_lone_surrogates_in_a_live_session_get_an_error_event(
    serve: Serve, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(redis_url=redis_server.url)
    client = await open_voice(server, make_token("browser-cut-emoji"))
    await client.send(LONE_SURROGATE_ITEM)
    error = (await client.recv_until("error"))[-1]["error"]
    assert (error["code"], error["event_id"]) == ("invalid_text", "cut-emoji")
    await client.send('{"type": "foo\\ud800", "event_id": "cut-type"}')
    error = (await client.recv_until("error"))[-1]["error"]
    assert error["code"] in ("unknown_event", "invalid_text") and error["event_id"] == "cut-type"
    # The session goes on: the same item without the cut answers as usual.
    await client.send(LONE_SURROGATE_ITEM.replace("\\ud83d", "\\ud83d\\ude00"))
    added = (await client.recv_until("conversation.item.added"))[-1]["item"]
    assert added["content"][0]["text"] == "hi \U0001f600"
    await answers(client)
    await client.close()
    assert server_failures(caplog) == []


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"sub": ""}, "'sub'"),
        ({"sub": "   "}, "'sub'"),
        ({"exp": "9999999999"}, "'exp'"),
    ],
)
async def test_an_empty_sub_or_a_string_exp_is_4001(
    serve: Serve, claims: dict[str, str], why: str
) -> None:
    server = await serve(redis_enabled=False)
    now = int(time.time())
    token = jwt.encode({"sub": "u", "plan": "elite", "iat": now, "exp": now + 600, **claims},
                       TEST_JWT_SECRET, algorithm="HS256")  # fmt: skip
    code, reason = await refused(server, token)
    assert code == 4001 and why in reason, (code, reason)


async def test_the_local_engine_keeps_a_bounded_conversation(serve: Serve) -> None:
    # A client adding items forever: the oldest go (with `conversation.item.deleted`), the
    # newest stay retrievable.
    server = await serve(redis_enabled=False)
    client = await open_voice(server, make_token("item-hoarder"))
    text = "x" * 100_000
    first_id = None
    deleted: list[str] = []
    for i in range(30):  # 3 MB of items: over the engine's 256 KiB
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"{i} {text}"}]}  # fmt: skip
        await client.send({"type": "conversation.item.create", "item": item})
        events = await client.recv_until("conversation.item.done")
        first_id = first_id or events[-1]["item"]["id"]
        deleted += [e["item_id"] for e in events if e["type"] == "conversation.item.deleted"]
        last_id = events[-1]["item"]["id"]
    assert first_id in deleted and len(deleted) >= 25
    await client.send({"type": "conversation.item.retrieve", "item_id": first_id})
    assert (await client.recv_until("error"))[-1]["error"][
        "code"
    ] == "item_retrieve_invalid_item_id"
    await client.send({"type": "conversation.item.retrieve", "item_id": last_id})
    assert (await client.recv_until("conversation.item.retrieved"))[-1]["item"]["id"] == last_id
    await client.close()


async def test_an_upstream_error_quoting_the_api_key_reaches_the_client_scrubbed(
    serve: Serve, redis_server: RedisServer
) -> None:
    key = "sk-proj-Zq81xXbLm0pQ-relayed-secret-4471"
    async with StandinOpenAI() as upstream:
        server = await serve(
            redis_url=redis_server.url, voice_engine="openai", openai_api_key=key,
            openai_realtime_url=upstream.url,
        )  # fmt: skip
        client = await open_voice(server, make_token("quoted-key"))
        await upstream.wait_for_connections(1)
        message = f"Incorrect API key provided: {key}. You can find your API key at …"
        await upstream.send({"type": "error", "event_id": "event_up_1", "error": {
            "type": "invalid_request_error", "code": "invalid_api_key", "message": message,
            "param": None, "event_id": None, "details": {"key": key, "prefix": key[:20]},
        }})  # fmt: skip
        async with asyncio.timeout(10):
            while True:  # as it comes on the wire, `session.created` and such before it
                raw = await client.ws.recv()
                text = raw if isinstance(raw, str) else raw.decode()
                if json.loads(text)["type"] == "error":
                    break
        assert json.loads(text)["error"]["code"] == "invalid_api_key"
        assert key not in text and "Incorrect API key provided: ***." in text
        await client.close()


async def test_a_resume_while_still_serving_from_memory_is_never_4004(
    serve: Serve, redis_server: RedisServer
) -> None:
    # Instance A starts during an outage and reconnects to Redis only after a long backoff.
    redis_server.stop()
    patient = await serve(
        redis_url=redis_server.url, retry_max_attempts=1, retry_base_delay=60,
        retry_max_delay=60, retry_backoff_factor=1, metrics_sample_seconds=3600,
    )  # fmt: skip
    redis_server.start()
    # Instance B, back on Redis, holds a session A has never heard of.
    other = await serve(redis_url=redis_server.url)
    client = await open_voice(other, make_token("resumer-11"))
    session_id = client.session_id
    await client.close()
    outcomes = []
    async with asyncio.timeout(20):
        while True:
            again = await open_voice(
                patient, make_token("resumer-11"), session_id=session_id, expect_session=False
            )
            try:
                first = json.loads(await again.ws.recv())
                break
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                outcomes.append((closed.rcvd.code, closed.rcvd.reason))
            await asyncio.sleep(0.2)
    assert (first["resumed"], first["session_id"]) == (True, session_id), first
    assert set(outcomes) <= {(1013, "Try again later")}, outcomes
    await again.close()


# -- server processes: Redis out of memory, logs, Sentry ----------------------------------------


async def test_health_shows_redis_memory_and_the_alert_while_writes_fail(
    server_factory: Factory, redis_server: RedisServer
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url, "METRICS_SAMPLE_SECONDS": "0.2"})
    assert gateway.health()["redis"]["using_fallback"] is False
    admin = aioredis.from_url(redis_server.url)
    try:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1mb")
        with pytest.raises(aioredis.ResponseError, match="maxmemory"):
            for i in range(1000):  # at most ~64 MB: the OOM refusal comes far earlier
                await admin.set(f"fill:{i}", "x" * 64_000)
        # A new session's writes are refused: the gateway falls back, and still serves.
        client = await open_voice(gateway, make_token("oom"))
        await answers(client)
        # Fallback starts at the refused write; the figures come with the probe that follows it.
        async with asyncio.timeout(10):
            while True:
                report = gateway.health()
                redis = report["redis"]
                assert isinstance(redis, dict)
                if redis["using_fallback"] and redis.get("used_memory_human"):
                    break
                await asyncio.sleep(0.1)
        assert report["status"] == "degraded"
        alerts = {alert["name"]: alert for alert in report["alerts"]}  # type: ignore[attr-defined]
        assert alerts["redis_memory_percent"]["value"] > 100, alerts
        assert alerts["redis_memory_percent"]["threshold"] == 80.0
        await client.close()
    finally:
        await admin.config_set("maxmemory", 0)
        await admin.aclose()


async def test_a_user_id_cannot_forge_a_text_log_line(server_factory: Factory) -> None:
    server = server_factory({"REDIS_ENABLED": "false", "VOICE_RATE_LIMIT": "1/hour"})
    forged = "2020-01-01 00:00:00,000 INFO    voicegate.storage: ✅ Redis connected successfully"
    user = f"mallory\n{forged}\r\x1b[2K\x00\x85\u2028{forged}"
    token = make_token(user)
    await (await open_voice(server, token)).close()
    assert await refused(server, token) == (4029, "Rate limit exceeded (1 sessions/hour max)")
    server.wait_for_log("Rate limit exceeded for user mallory")
    lines = server.log.splitlines()
    assert not [line for line in lines if line.startswith("2020-01-01")], server.log
    (line,) = [line for line in lines if "Rate limit exceeded for user mallory" in line]
    assert "mallory\\x0a2020-01-01" in line and "\\x0d\\x1b[2K\\x00\\x85\\u2028" in line
    assert not any(char in server.log for char in "\r\x1b\x00\x85\u2028")


class FlakyUpstream(StandinOpenAI):
    """Chokes on `response.create`: drops the connection and refuses the gateway's reconnect,
    so the session ends with 1011 (and an ERROR log: what reaches Sentry); the next connection
    (the client's resume) is accepted again."""

    async def _answer(self, websocket: Any, conn: Any, text: str) -> None:
        if '"response.create"' in text:
            self.refuse_first = len(self.attempts) + 1
            await websocket.close(1011, "choked")
            return
        await super()._answer(websocket, conn, text)


async def test_resume_and_fail_loops_reach_sentry_a_bounded_number_of_times(
    server_factory: Factory,
) -> None:
    with SentryStandin() as sentry:
        async with FlakyUpstream() as upstream:
            gateway = server_factory({
                "REDIS_ENABLED": "false", "SENTRY_DSN": sentry.dsn, "VOICE_ENGINE": "openai",
                "OPENAI_API_KEY": "sk-test-sentry-flood-0123456789", "RETRY_MAX_ATTEMPTS": "1",
                "OPENAI_REALTIME_URL": upstream.url,
            })  # fmt: skip
            loops = 12
            for user in ("flood-a", "flood-b"):
                token = make_token(user)
                client = await open_voice(gateway, token)
                session_id = client.session_id
                for _ in range(loops):
                    await client.send({"type": "response.create"})
                    assert (await client.closed(timeout=20))[0] == 1011
                    client = await open_voice(gateway, token, session_id=session_id)
                    assert client.first is not None and client.first["resumed"] is True
                await client.close()
            failures = gateway.log.count("could not reconnect")
            assert failures == 2 * loops  # every loop failed, and was logged
            gateway.stop()  # flushes what the SDK still holds
    lost = [e for e in sentry.payloads() if "could not reconnect" in event_message(e)]
    by_user = Counter(event.get("user", {}).get("id") for event in lost)
    assert by_user == {"flood-a": 1, "flood-b": 1}, by_user  # one per user and kind of error
    assert len(sentry.payloads()) <= 4, [event_message(e) for e in sentry.payloads()]
