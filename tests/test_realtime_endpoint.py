"""OpenAI's path and conventions (issue 9): `/v1/realtime`, credentials from a header or a
subprotocol, ephemeral client secrets, no `gateway.*` events for SDKs, the official SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect

from tests.clients import VoiceClient, b64, make_token, pcm
from tests.plan_standin import PlanStandin
from tests.redis_server import RedisServer
from tests.servers import InProcessServer
from voicegate.ops.logs import MaskingFormatter

Serve = Callable[..., "asyncio.Future[InProcessServer]"]


async def realtime(
    server: InProcessServer,
    query: str = "model=gpt-realtime",
    *,
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | None = None,
) -> VoiceClient:
    ws = await connect(
        f"{server.realtime}?{query}", additional_headers=headers, max_size=None,
        subprotocols=subprotocols,  # type: ignore[arg-type]
    )  # fmt: skip
    return VoiceClient(ws, None)


async def first_event(client: VoiceClient) -> dict[str, Any]:
    return await client.recv()


async def test_bearer_token_at_openais_path_gets_openais_events_only(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    client = await realtime(server, headers={"Authorization": f"Bearer {make_token('sdk-1')}"})
    first = await first_event(client)
    assert first["type"] == "session.created"  # no `gateway.session`: SDKs would choke on it
    await client.close()
    client = await realtime(
        server, "model=x&gateway_events=true",
        headers={"Authorization": f"Bearer {make_token('sdk-1')}"},
    )  # fmt: skip
    first = await first_event(client)
    assert first["type"] == "gateway.session" and first["engine"] == "local"
    await client.close()


async def test_browser_subprotocol_credentials_and_the_realtime_subprotocol(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    offered = ["realtime", f"openai-insecure-api-key.{make_token('browser-1')}", "openai-beta.v1"]
    client = await realtime(server, subprotocols=offered)
    assert client.ws.subprotocol == "realtime"
    assert (await first_event(client))["type"] == "session.created"
    await client.close()
    # Browsers fail a connection whose offer gets no answer: another offered one is chosen,
    # the credential's own only when nothing else was offered.
    for offer, chosen in (([offered[2], offered[1]], offered[2]), ([offered[1]], offered[1])):
        client = await realtime(server, subprotocols=offer)
        assert client.ws.subprotocol == chosen
        assert (await first_event(client))["type"] == "session.created"
        await client.close()


async def test_refusals_at_openais_path_come_with_openais_error_codes(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    client = await realtime(server, headers={"Authorization": "Bearer expired-or-wrong"})
    error = await client.recv()
    assert error["type"] == "error" and error["event_id"]
    assert error["error"]["code"] == "invalid_api_key"  # LiveKit stops retrying on it
    assert (await client.closed())[0] == 4001
    free = await realtime(server, headers={"Authorization": f"Bearer {make_token(plan='free')}"})
    assert (await free.recv())["error"]["code"] == "insufficient_quota"
    assert (await free.closed())[0] == 4003


async def test_pipecats_glued_query_is_read_as_meant(serve: Serve) -> None:
    # Pipecat builds f"{base_url}?model=…" even when base_url has a query already.
    server = await serve(redis_enabled=False)
    query = f"token={make_token('pipecat')}&gateway_events=true?model=gpt-realtime"
    client = await realtime(server, query)
    assert (await first_event(client))["type"] == "gateway.session"
    await client.close()


async def test_no_credential_and_a_bad_one_are_4001(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        client = await realtime(server, headers=headers)
        code, reason = await client.closed()
        assert code == 4001, headers
        assert "not-a-token" not in reason


async def test_session_id_resumes_at_openais_path_too(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    bearer = {"Authorization": f"Bearer {make_token('sdk-2')}"}
    first = await realtime(server, "gateway_events=true", headers=bearer)
    session_id = (await first_event(first))["session_id"]
    await first.close()
    again = await realtime(server, f"gateway_events=true&session_id={session_id}", headers=bearer)
    resumed = await first_event(again)
    assert (resumed["resumed"], resumed["session_id"]) == (True, session_id)
    await again.close()


async def test_session_update_with_everything_an_sdk_sends_gets_no_error(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    client = await realtime(server, headers={"Authorization": f"Bearer {make_token('sdk-3')}"})
    await client.recv_until("session.created")
    update = {
        "type": "session.update",
        "event_id": "upd-1",
        "session": {
            "type": "realtime", "model": "gpt-realtime", "instructions": "Be a pirate.",
            "tools": [{"type": "function", "name": "f", "parameters": {}}], "tool_choice": "auto",
            "tracing": "auto", "output_modalities": ["audio"],
            "audio": {
                "input": {"noise_reduction": {"type": "near_field"},
                          "transcription": {"model": "whisper-1"}},
                "output": {"voice": "coral"},
            },
        },
    }  # fmt: skip
    await client.send(update)
    updated = (await client.recv_until("session.updated"))[-1]
    assert updated["session"]["audio"]["output"]["voice"] == "coral"
    assert updated["session"]["instructions"] != "Be a pirate."  # the server's, unchanged
    assert "tools" not in updated["session"]
    await client.close()


# -- ephemeral client secrets ---------------------------------------------------------------------


async def test_client_secret_stands_for_the_user_on_every_instance(
    serve: Serve, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    one, two = await serve(redis_url=redis_server.url), await serve(redis_url=redis_server.url)
    token = make_token("secret-user", plan="intelia")
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{one.http}/v1/realtime/client_secrets",
            headers={"Authorization": f"Bearer {token}"},
            json={"expires_after": {"anchor": "created_at", "seconds": 60},
                  "session": {"type": "realtime", "model": "gpt-realtime"}},
        )  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    secret = body["value"]
    assert secret.startswith("ek_") and abs(body["expires_at"] - (time.time() + 60)) < 5
    ways: list[dict[str, Any]] = [
        {"query": f"token={secret}"},
        {"headers": {"Authorization": f"Bearer {secret}"}},
        {"subprotocols": ["realtime", f"openai-insecure-api-key.{secret}"]},
    ]
    for server, way in zip((one, two, two), ways, strict=True):
        query = way.pop("query", "") + "&gateway_events=true"
        client = await realtime(server, query, **way)
        session = await first_event(client)
        assert session["type"] == "gateway.session", way
        await client.close()
    # What the server wrote, through its formatter (the test's own websockets client logs its
    # requests: those lines are not the server's).
    formatter = MaskingFormatter(one.settings.secret_values(), json_lines=False)
    lines = [formatter.format(r) for r in caplog.records if not r.name.startswith("websockets")]
    assert any("WebSocket /v1/realtime?token=***" in line for line in lines)
    assert not [line for line in lines if secret in line or token in line]


async def test_client_secret_refusals(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    url = f"{server.http}/v1/realtime/client_secrets"
    async with httpx.AsyncClient() as http:
        assert (await http.post(url)).status_code == 401
        bad = await http.post(url, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "invalid_request_error"
        free = {"Authorization": f"Bearer {make_token('free-user', plan='free')}"}
        assert (await http.post(url, headers=free)).status_code == 403
        ok = {"Authorization": f"Bearer {make_token('ok-user')}"}
        too_long = {"expires_after": {"anchor": "created_at", "seconds": 7201}}
        assert (await http.post(url, headers=ok, json=too_long)).status_code == 400
        minted = (await http.post(url, headers=ok, json={"expires_after": {"seconds": 10}})).json()
        again = await http.post(url, headers={"Authorization": f"Bearer {minted['value']}"})
        assert again.status_code == 401  # a client secret does not mint another
    expired = await realtime(server, f"token={minted['value']}x")
    code, _ = await expired.closed()
    assert code == 4001


# -- the official SDK ----------------------------------------------------------------------------


async def test_openai_python_sdk_completes_a_spoken_turn(serve: Serve) -> None:
    """`AsyncOpenAI` configured only with a base URL and the user's token as its key."""
    server = await serve(redis_enabled=False)
    client = AsyncOpenAI(
        api_key=make_token("sdk-user"), base_url=f"{server.http}/v1",
        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
    )  # fmt: skip
    spoken = pcm(1.0) + pcm(0.7, amplitude=0)
    heard = bytearray()
    async with asyncio.timeout(20), client.realtime.connect(model="gpt-realtime") as connection:
        detection = {"type": "server_vad", "silence_duration_ms": 500}
        audio = {"output": {"voice": "marin"}, "input": {"turn_detection": detection}}
        await connection.session.update(session={"type": "realtime", "audio": audio})  # type: ignore[typeddict-item]
        for start in range(0, len(spoken), 4800):
            chunk = base64.b64encode(spoken[start : start + 4800]).decode()
            await connection.input_audio_buffer.append(audio=chunk)
        async for event in connection:
            assert event.type != "error", event
            if event.type == "response.output_audio.delta":
                heard += base64.b64decode(event.delta)
            if event.type == "response.done":
                break
    assert len(heard) >= len(pcm(1.0)) and spoken.startswith(bytes(heard))
    await client.close()


async def test_client_secrets_may_be_minted_by_a_browser_app_of_another_origin(
    serve: Serve,
) -> None:
    server = await serve(redis_enabled=False)
    url = f"{server.http}/v1/realtime/client_secrets"
    origin = {"Origin": "https://app.example.com"}
    async with httpx.AsyncClient() as http:
        preflight = await http.options(
            url,
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert preflight.headers["access-control-allow-methods"] == "POST"
        allowed = {
            h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
        }
        assert {"authorization", "content-type"} <= allowed
        token = {"Authorization": f"Bearer {make_token('cors-user')}"}
        minted = await http.post(url, headers={**origin, **token})
        assert minted.status_code == 200 and minted.json()["value"].startswith("ek_")
        assert minted.headers["access-control-allow-origin"] == "*"
        refused = await http.post(url, headers=origin)  # the app can read why, too
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in minted.headers  # no cookies, ever


async def test_a_refused_client_still_speaking_gets_the_closing_handshake(serve: Serve) -> None:
    # SDKs send their configuration and audio as soon as the socket opens, while admission
    # runs (with reading paused). Closing the socket over those unread frames reset the
    # connection, and the reset could destroy the close frame before the client read it
    # (Agents SDK: 1006 "no close frame received or sent", not 4003). The server now reads on
    # after its close frame, and closes the socket when the client's close frame comes back.
    gate = asyncio.Event()
    async with PlanStandin({"speaker": "free"}, gate=gate) as plans:
        server = await serve(
            redis_enabled=False, plan_lookup_url=plans.url, plan_lookup_token=plans.token
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {make_token('speaker', plan=None)}\r\n\r\n".encode()
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        speech = json.dumps({"type": "input_audio_buffer.append", "audio": b64(pcm(0.02))})
        for _ in range(20):  # while admission waits for the plan service
            writer.write(_client_frame(0x1, speech.encode()))
        await writer.drain()
        gate.set()
        try:
            while (frame := await _server_frame(reader))[0] != 0x8:
                assert json.loads(frame[1])["error"]["code"] == "insufficient_quota"
            assert int.from_bytes(frame[1][:2], "big") == 4003
            writer.write(_client_frame(0x8, frame[1][:2]))
            assert await reader.read() == b""  # a clean end of stream, not a reset
        finally:
            writer.close()


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size >= 126:
        size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8), "big")
    return first & 0x0F, await reader.readexactly(size)
