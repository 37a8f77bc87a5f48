"""The OpenAI engine against a real WebSocket server standing in for the Realtime API."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.engine_events import Pulled
from tests.redis_server import free_port
from tests.standin_openai import StandinOpenAI
from voicegate._retry import Backoff
from voicegate.config import Settings
from voicegate.conversation import Turn
from voicegate.engines import (
    EngineConfig,
    OpenAIEngine,
    engine_from_settings,
)
from voicegate.errors import UpstreamClosed, UpstreamRejected, UpstreamUnavailable

KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"
CONFIG = EngineConfig(instructions="Be brief.", voice="verse")
TINY = Backoff(attempts=3, base=0.01, factor=2.0, cap=0.05)


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": KEY,
        "openai_realtime_url": url,
        "openai_realtime_model": "gpt-realtime-test",
        "voice_engine": "openai",
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "retry_max_attempts": 3,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings


@pytest.fixture
async def upstream() -> AsyncIterator[StandinOpenAI]:
    async with StandinOpenAI() as server:
        yield server


async def test_handshake_is_ga_with_bearer_and_model(upstream: StandinOpenAI) -> None:
    engine = engine_from_settings(settings_for(upstream.url))
    assert isinstance(engine, OpenAIEngine)
    session = Pulled(await engine.connect(CONFIG, []))
    try:
        conn = await upstream.wait_for_connections(1)
        assert conn.headers["Authorization"] == f"Bearer {KEY}"
        assert "OpenAI-Beta" not in conn.headers
        assert conn.path == "/v1/realtime?model=gpt-realtime-test"
        assert "permessage-deflate" not in conn.headers.get("Sec-WebSocket-Extensions", "")
    finally:
        await session.close()


async def test_session_update_first_then_history(upstream: StandinOpenAI) -> None:
    history = [Turn("user", "What is the capital of France?"), Turn("assistant", "Paris.")]
    config = EngineConfig(instructions="Be brief.", voice="verse", speed=1.2, language="fr")
    session = Pulled(
        await OpenAIEngine(KEY, url=upstream.url, backoff=TINY).connect(config, history)
    )
    try:
        events = await upstream.wait_for_event_count(3)
        assert [e["type"] for e in events] == ["session.update"] + ["conversation.item.create"] * 2
        s = events[0]["session"]
        assert s["type"] == "realtime"
        assert s["instructions"].startswith("Be brief.") and "(fr)" in s["instructions"]
        assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert s["audio"]["output"]["voice"] == "verse"
        assert s["audio"]["output"]["speed"] == 1.2
        assert s["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
        assert s["audio"]["input"]["transcription"]["language"] == "fr"
        assert s["audio"]["input"]["transcription"]["model"]
        user, assistant = events[1]["item"], events[2]["item"]
        assert user == {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "What is the capital of France?"}],
        }
        assert assistant["role"] == "assistant"
        assert assistant["content"] == [{"type": "output_text", "text": "Paris."}]
    finally:
        await session.close()


async def test_events_relay_as_text_both_ways(upstream: StandinOpenAI) -> None:
    session = Pulled(await OpenAIEngine(KEY, url=upstream.url, backoff=TINY).connect(CONFIG, []))
    try:
        async with asyncio.timeout(5):
            assert json.loads(await session.receive())["type"] == "session.created"
            frame = '{"type":"input_audio_buffer.append","event_id":"e42","audio":"AAAA"}'
            await session.send(frame)
            while True:
                event = json.loads(await session.receive())
                if event["type"] == "response.output_audio.delta":
                    break
        assert event["event_id"] == "e42" and event["delta"] == "AAAA"
        assert upstream.connections[0].raw_events[-1] == frame  # sent as is
    finally:
        await session.close()


async def test_two_refusals_then_success(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with StandinOpenAI(refuse_first=2) as upstream:
        engine = engine_from_settings(settings_for(upstream.url))
        session = Pulled(await engine.connect(CONFIG, []))
        await session.close()
        assert [a.refused_with for a in upstream.attempts] == [503, 503, None]
        assert len(upstream.connections) == 1
    assert "attempt 1/3" in caplog.text and "attempt 2/3" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize("status", [503, 429, 500])
async def test_refused_every_time_is_unavailable(status: int) -> None:
    async with StandinOpenAI(refuse_first=100, refuse_status=status) as upstream:
        engine = engine_from_settings(settings_for(upstream.url, retry_max_attempts=3))
        with pytest.raises(UpstreamUnavailable) as caught:
            await engine.connect(CONFIG, [])
        assert len(upstream.attempts) == 3
    assert f"HTTP {status}" in str(caught.value)
    assert KEY not in str(caught.value)


async def test_invalid_key_is_rejected_without_retry() -> None:
    async with StandinOpenAI(valid_key="sk-the-right-key-0000000000") as upstream:
        engine = engine_from_settings(settings_for(upstream.url, retry_max_attempts=5))
        with pytest.raises(UpstreamRejected) as caught:
            await engine.connect(CONFIG, [])
        assert len(upstream.attempts) == 1
        assert upstream.attempts[0].refused_with == 401
    message = str(caught.value)
    assert "invalid_api_key" in message and "401" in message
    assert KEY not in message and KEY[:12] not in message


@pytest.mark.parametrize("code", ["insufficient_quota", "invalid_api_key"])
async def test_error_event_at_set_up_is_rejected_without_retry(code: str) -> None:
    async with StandinOpenAI(first_error=code) as upstream:
        engine = OpenAIEngine(KEY, url=upstream.url, backoff=TINY)
        with pytest.raises(UpstreamRejected, match=code) as caught:
            await engine.connect(CONFIG, [])
        assert len(upstream.attempts) == 1
    assert KEY not in str(caught.value)


async def test_other_error_event_at_set_up_is_retried() -> None:
    async with StandinOpenAI(first_error="server_error") as upstream:
        engine = OpenAIEngine(KEY, url=upstream.url, backoff=TINY)
        with pytest.raises(UpstreamUnavailable, match="server_error"):
            await engine.connect(CONFIG, [])
        assert len(upstream.attempts) == 3


async def test_connection_refused_is_unavailable() -> None:
    engine = OpenAIEngine(KEY, url=f"ws://127.0.0.1:{free_port()}/v1/realtime", backoff=TINY)
    with pytest.raises(UpstreamUnavailable, match="after 3 attempts"):
        await engine.connect(CONFIG, [])


async def test_silent_server_times_out_and_is_unavailable() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accepts TCP, never answers the WebSocket handshake

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        engine = OpenAIEngine(
            KEY, url=f"ws://127.0.0.1:{port}/", backoff=Backoff(2, 0.01, 2, 0.02), open_timeout=0.2
        )
        with pytest.raises(UpstreamUnavailable, match="timeout"):
            await engine.connect(CONFIG, [])
        assert len(writers) == 2
    finally:
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def test_wrong_path_is_not_retried() -> None:
    async with StandinOpenAI(refuse_first=100, refuse_status=404) as upstream:
        engine = OpenAIEngine(KEY, url=upstream.url, backoff=TINY)
        with pytest.raises(UpstreamUnavailable, match="OPENAI_REALTIME_URL"):
            await engine.connect(CONFIG, [])
        assert len(upstream.attempts) == 1


async def test_upstream_close_raises_upstream_closed(upstream: StandinOpenAI) -> None:
    session = Pulled(await OpenAIEngine(KEY, url=upstream.url, backoff=TINY).connect(CONFIG, []))
    async with asyncio.timeout(5):
        assert json.loads(await session.receive())["type"] == "session.created"
        await upstream.close_connections(code=1011, reason="gone")
        with pytest.raises(UpstreamClosed) as caught:
            while True:
                await session.receive()
    assert caught.value.code == 1011
    with pytest.raises(UpstreamClosed):
        await session.send('{"type":"response.create"}')
    await session.close()
    await session.close()  # idempotent


def test_repr_hides_the_key() -> None:
    engine = OpenAIEngine(KEY, url="wss://example.test/v1/realtime", model="m")
    assert KEY not in repr(engine)
    assert engine.url == "wss://example.test/v1/realtime?model=m"


def test_engine_from_settings_picks_local_without_key() -> None:
    settings = settings_for("ws://127.0.0.1:1/", voice_engine="auto", openai_api_key=None)
    assert engine_from_settings(settings).name == "local"
