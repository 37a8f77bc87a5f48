"""Voice sessions end to end: echo, translation, resume after a restart, upstream faults.

In process (`serve`), except what needs processes: a crash and restart, and SIGTERM's drain.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections.abc import Callable

import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from tests.clients import b64, make_token, open_voice, pcm
from tests.redis_server import RedisServer
from tests.servers import GatewayFactory, Serve
from tests.standin_openai import StandinOpenAI
from voicegate.storage import SessionRecord
from voicegate.storage.keys import Keys

API_KEY = "sk-test-standin-key-0123456789"


def openai_env(upstream: StandinOpenAI, redis_url: str | None = None) -> dict[str, str]:
    env = {
        "VOICE_ENGINE": "openai",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_REALTIME_URL": upstream.url,
    }
    env.update({"REDIS_URL": redis_url} if redis_url else {"REDIS_ENABLED": "false"})
    return env


def openai_settings(upstream: StandinOpenAI, redis_url: str | None = None) -> dict[str, object]:
    """`openai_env` as settings of an in-process server."""
    return {name.lower(): value for name, value in openai_env(upstream, redis_url).items()}


def audio_of(events: list[dict[str, object]], kind: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(str(e["delta"])) for e in events if e["type"] == kind)


async def test_local_engine_echoes_committed_audio_byte_for_byte(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False)
    client = await open_voice(gateway, make_token())
    spoken = pcm(1.2)
    for start in range(0, len(spoken), 4800):  # 100 ms frames, as a microphone would send
        await client.send(
            {"type": "input_audio_buffer.append", "audio": b64(spoken[start : start + 4800])}
        )
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.recv_until("response.done")
    kinds = [e["type"] for e in events]
    assert "input_audio_buffer.committed" in kinds and "response.created" in kinds
    assert audio_of(events) == spoken
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert transcript["transcript"] == "I heard 1.2 seconds of audio"
    assert events[-1]["response"]["status"] == "completed"  # type: ignore[index]
    await client.close()


async def test_interrupt_cancels_the_response(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False)
    client = await open_voice(gateway, make_token())
    spoken = pcm(10)
    for start in range(0, len(spoken), 48000):  # 1 s frames
        await client.send(
            {"type": "input_audio_buffer.append", "audio": b64(spoken[start : start + 48000])}
        )
    await client.send({"type": "input_audio_buffer.commit"})
    await client.recv_until("response.output_audio.delta")
    await client.send({"type": "interrupt"})  # the original front-end's cancel
    events = await client.recv_until("response.done")
    assert events[-1]["response"]["status"] == "cancelled"  # type: ignore[index]
    assert len(audio_of(events)) < len(pcm(10))
    await client.close()


async def test_beta_events_are_renamed(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False)
    client = await open_voice(gateway, make_token(), events="beta")
    await client.send({"type": "audio.input", "audio": b64(pcm(0.3))})
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.recv_until("response.done")
    kinds = {e["type"] for e in events}
    assert {"response.audio.delta", "response.audio_transcript.done"} <= kinds
    assert not any(k.startswith(("response.output_audio", "response.output_text")) for k in kinds)
    assert audio_of(events, "response.audio.delta") == pcm(0.3)
    await client.close()


async def test_openai_engine_gets_translated_events(serve: Serve) -> None:
    async with StandinOpenAI() as upstream:
        gateway = await serve(**openai_settings(upstream))
        client = await open_voice(gateway, make_token())
        conn = await upstream.wait_for_connections(1)
        assert conn.headers["Authorization"] == f"Bearer {API_KEY}"
        assert "OpenAI-Beta" not in conn.headers
        assert conn.path.startswith("/v1/realtime?model=")
        first = await upstream.wait_for_event("session.update")
        assert conn.events[0] == first
        assert first["session"]["instructions"]
        frame = b64(pcm(0.02))
        await client.send({"type": "audio.input", "audio": frame})
        append = await upstream.wait_for_event("input_audio_buffer.append")
        assert append["audio"] == frame
        # `audio.input` is the original front-end's event: from now on it hears beta names.
        echoed = await client.recv_until("response.audio.delta")
        assert echoed[-1]["delta"] == frame
        await client.send({"type": "interrupt"})  # nothing plays: nothing to cancel
        await upstream.send({"type": "response.created", "response": {"id": "resp_1"}})
        await client.recv_until("response.created")
        await client.send({"type": "interrupt"})  # an answer is on its way: cancel it
        await upstream.wait_for_event("response.cancel")
        assert upstream.connections[0].types().count("response.cancel") == 1
        await client.send({"type": "language.detected", "language": "fr"})
        updates = [
            e for e in await upstream.wait_for_event_count(4) if e["type"] == "session.update"
        ]
        assert len(updates) == 2 and "fr" in json.dumps(updates[-1])
        await client.close()


async def test_audio_deltas_reach_each_dialect_however_the_engine_writes_them(
    serve: Serve,
) -> None:
    # The relay tells audio deltas by their first bytes when written compactly with `type`
    # first (the stand-in's echo, OpenAI's own), and by parsing their head otherwise.
    shapes = [
        {"type": "response.output_audio.delta", "delta": "AAAA"},  # spaces after the colons
        {"event_id": "e1", "type": "response.output_audio.delta", "delta": "AAEC"},  # type last
    ]
    async with StandinOpenAI() as upstream:
        gateway = await serve(**openai_settings(upstream))
        for legacy, name in (
            (False, "response.output_audio.delta"),
            (True, "response.audio.delta"),
        ):
            client = await open_voice(gateway, make_token(f"shapes-{legacy}"))
            await upstream.wait_for_connections(1 + legacy)
            frame = b64(pcm(0.02))
            append = "audio.input" if legacy else "input_audio_buffer.append"
            await client.send({"type": append, "audio": frame})
            echoed = await client.recv_until(name)  # compact, written by the stand-in
            assert echoed[-1]["delta"] == frame
            for shape in shapes:
                await upstream.send(shape)
                heard = await client.recv_until(name)  # under the other name, it times out
                assert heard[-1]["delta"] == shape["delta"], heard
            await client.close()


async def _conversation_saved(
    redis_url: str,
    user: str,
    session_id: str,
    turns: int,
    until: Callable[[SessionRecord], bool] = lambda record: True,
) -> SessionRecord:
    raw = aioredis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while True:
                stored = await raw.get(Keys(user).session(session_id))
                if stored:
                    record = SessionRecord.model_validate_json(stored)
                    if len(record.conversation) >= turns and until(record):
                        return record
                await asyncio.sleep(0.05)
    finally:
        await raw.aclose()


async def test_resume_after_restart_replays_the_conversation(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    async with StandinOpenAI() as upstream:
        gateway = server_factory(openai_env(upstream, redis_server.url))
        client = await open_voice(gateway, make_token("alice", email="alice@example.com"))
        session_id = client.session_id
        await client.send({"type": "session.update", "session": {"voice": "verse", "speed": 1.2}})
        await client.send({"type": "input_audio_buffer.commit"})
        await client.recv_until("conversation.item.input_audio_transcription.completed")
        await client.send({"type": "response.create"})
        await client.recv_until("response.done")
        record = await _conversation_saved(redis_server.url, "alice", session_id, 2)
        assert [(t.role, t.text) for t in record.conversation] == [
            ("user", "stand-in heard you"), ("assistant", "stand-in answer"),
        ]  # fmt: skip
        assert record.preferences == {"voice": "verse", "speed": 1.2}
        assert record.email == "alice@example.com"

        # The backend dies mid-session (no drain: a crash) and comes back on the same port.
        gateway.stop(signal.SIGKILL)
        code = (await client.closed())[0]
        assert code == 1006
        gateway.start()
        again = await open_voice(gateway, make_token("alice"), session_id=session_id)
        assert again.first is not None
        assert (again.first["resumed"], again.session_id) == (True, session_id)

        conn = await upstream.wait_for_connections(2)
        await upstream.wait_for_event_count(3, connection=1)
        events = conn.events
        assert events[0]["type"] == "session.update"
        assert events[0]["session"]["audio"]["output"]["voice"] == "verse"
        replayed = [e["item"] for e in events if e["type"] == "conversation.item.create"]
        assert [(i["role"], i["content"][0]["text"]) for i in replayed] == [
            ("user", "stand-in heard you"), ("assistant", "stand-in answer"),
        ]  # fmt: skip
        await again.close()


async def test_drain_saves_and_the_client_resumes_on_another_instance(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    env = {"REDIS_URL": redis_server.url}
    first, second = server_factory(env), server_factory(env)
    client = await open_voice(first, make_token("bob"))
    await client.send({"type": "session.update", "session": {"voice": "sage"}})
    stopping = asyncio.get_running_loop().run_in_executor(None, first.stop)
    await client.recv_until("gateway.draining")
    assert (await client.closed())[0] == 1001
    await stopping
    again = await open_voice(second, make_token("bob"), session_id=client.session_id)
    assert again.first is not None and again.first["resumed"] is True
    record = await _conversation_saved(
        redis_server.url, "bob", client.session_id, 0, lambda r: bool(r.preferences)
    )
    assert record.preferences["voice"] == "sage"
    await again.close()


async def test_upstream_drop_is_restored_with_the_conversation(serve: Serve) -> None:
    async with StandinOpenAI() as upstream:
        gateway = await serve(**openai_settings(upstream))
        client = await open_voice(gateway, make_token())
        await client.send({"type": "input_audio_buffer.commit"})
        await client.recv_until("conversation.item.input_audio_transcription.completed")
        await upstream.close_connections(1011, "upstream hiccup")
        await client.recv_until("gateway.upstream_reconnected")
        await upstream.wait_for_connections(2)
        item = await upstream.wait_for_event("conversation.item.create", connection=1)
        assert item["item"]["content"][0]["text"] == "stand-in heard you"
        await client.close()


async def test_upstream_gone_for_good_closes_the_client_1011(serve: Serve) -> None:
    upstream = StandinOpenAI()
    await upstream.__aenter__()
    gateway = await serve(**openai_settings(upstream))
    client = await open_voice(gateway, make_token())
    await upstream.wait_for_connections(1)
    await upstream.close_connections(1001, "going away")
    await upstream.__aexit__(None, None, None)  # and it does not come back
    code, reason = await client.closed(timeout=20)
    assert code == 1011 and reason


async def test_refused_api_key_is_not_retried(serve: Serve) -> None:
    async with StandinOpenAI(valid_key="sk-the-real-key-0123456789") as upstream:
        gateway = await serve(**openai_settings(upstream))
        client = await open_voice(gateway, make_token(), expect_session=False)
        code, reason = await client.closed()
        assert code == 1011 and "key" in reason.lower()
        assert len(upstream.attempts) == 1
        assert API_KEY not in reason and API_KEY not in gateway.log


async def test_two_refused_connects_then_success(serve: Serve) -> None:
    async with StandinOpenAI(refuse_first=2) as upstream:
        gateway = await serve(**openai_settings(upstream))  # RETRY_MAX_ATTEMPTS defaults to 3
        client = await open_voice(gateway, make_token())
        assert client.first is not None and client.first["engine"] == "openai"
        assert [a.refused_with for a in upstream.attempts] == [503, 503, None]
        await client.close()


async def test_turn_detection_switched_off_stays_off_after_resume(
    serve: Serve, redis_server: RedisServer
) -> None:
    async with StandinOpenAI() as upstream:
        gateway = await serve(**openai_settings(upstream, redis_server.url))
        client = await open_voice(gateway, make_token("carol"))
        off = {"type": "session.update", "session": {"turn_detection": None}}
        await client.send(off)
        await upstream.wait_for_event_count(2)
        await client.close()
        record = await _conversation_saved(
            redis_server.url, "carol", client.session_id, 0, lambda r: bool(r.preferences)
        )
        assert record.preferences == {"turn_detection": None}
        again = await open_voice(gateway, make_token("carol"), session_id=client.session_id)
        conn = await upstream.wait_for_connections(2)
        await upstream.wait_for_event_count(1, connection=1)
        assert conn.events[0]["session"]["audio"]["input"]["turn_detection"] is None
        await again.close()


async def test_a_client_that_stops_reading_cannot_hold_up_a_restart(
    server_factory: GatewayFactory,
) -> None:
    async with StandinOpenAI(record_appends=False) as upstream:
        gateway = server_factory({**openai_env(upstream), "DRAIN_SECONDS": "2"})
        # With a queue of one message the client stops reading the socket almost at once.
        ws = await connect(f"{gateway.ws}?token={make_token()}", max_queue=1)
        frame = json.dumps({"type": "input_audio_buffer.append", "audio": b64(pcm(1.0))})
        for _ in range(120):  # ~8 MB echoed back at a client that no longer reads
            await ws.send(frame)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await upstream.wait_for_event("input_audio_buffer.commit")
        # SIGTERM: the drain, the last event and the close are each bounded, so the process
        # exits by itself (a SIGKILL after the 15 s wait would report -9).
        code = await asyncio.get_running_loop().run_in_executor(None, gateway.stop)
        assert code in (0, -signal.SIGTERM)
        ws.transport.abort()
