"""The local echo engine speaks the GA Realtime server events (contract §5)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from array import array
from typing import Any

import pytest

from tests.engine_events import Pulled
from tests.realtime_types import check_server_event
from voicegate.conversation import Turn
from voicegate.engines import EngineConfig, LocalEngine
from voicegate.errors import UpstreamClosed

MANUAL = EngineConfig(instructions="Be brief.", turn_detection=None)
VAD = EngineConfig(instructions="Be brief.", turn_detection={"type": "server_vad"})


def pcm(milliseconds: int, amplitude: int = 0) -> bytes:
    """PCM16 24 kHz: a square wave of `amplitude` (0: silence)."""
    samples = array(
        "h", ((amplitude if (i // 20) % 2 else -amplitude) for i in range(milliseconds * 24))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def append(audio: bytes, event_id: str | None = None) -> str:
    event: dict[str, Any] = {
        "type": "input_audio_buffer.append",
        "audio": base64.b64encode(audio).decode(),
    }
    if event_id:
        event["event_id"] = event_id
    return json.dumps(event)


async def events_until(session: Pulled, kind: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every event received up to and including the first of type `kind`."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1]["type"] != kind:
            seen.append(json.loads(await session.receive()))
    return seen


def replayed(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


async def connect(
    config: EngineConfig = MANUAL, history: list[Turn] | None = None, **kw: Any
) -> Pulled:
    session = Pulled(await LocalEngine(**kw).connect(config, history or []))
    await events_until(session, "session.created")
    return session


async def test_session_created_and_history_replayed() -> None:
    history = [Turn("user", "Hello"), Turn("assistant", "Hi there")]
    session = Pulled(await LocalEngine().connect(VAD, history))
    first = json.loads(await session.receive())
    assert first["type"] == "session.created"
    assert first["session"]["type"] == "realtime"
    assert first["session"]["instructions"] == "Be brief."
    assert first["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    events = [json.loads(await session.receive()) for _ in range(4)]
    added = [e["item"] for e in events if e["type"] == "conversation.item.added"]
    assert [(i["role"], i["content"][0]) for i in added] == [
        ("user", {"type": "input_text", "text": "Hello"}),
        ("assistant", {"type": "output_text", "text": "Hi there"}),
    ]
    assert session.history == history
    await session.send('{"type": "response.create"}')
    done = await events_until(session, "response.done")
    transcript = next(e for e in done if e["type"] == "response.output_audio_transcript.done")
    assert "2 earlier turns" in transcript["transcript"]
    assert replayed(done) == b""
    await session.close()


async def test_commit_echoes_the_audio_byte_for_byte() -> None:
    session = await connect(chunk_interval=0)
    audio = pcm(1234, amplitude=3000)  # not a whole number of chunks
    for start in range(0, len(audio), 3001 * 2):
        await session.send(append(audio[start : start + 3001 * 2]))
    await session.send('{"type": "input_audio_buffer.commit"}')
    await session.send('{"type": "response.create"}')  # turn detection is off: push-to-talk
    events = await events_until(session, "response.done")
    types = [e["type"] for e in events]
    assert types[0] == "input_audio_buffer.committed"
    assert types.index("conversation.item.input_audio_transcription.completed") < types.index(
        "response.created"
    )
    user = next(
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    )
    assert user["transcript"] == "(1.2 seconds of audio)"
    assert user["item_id"] == events[0]["item_id"]
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert len(deltas) == -(-len(audio) // 4800)
    assert replayed(events) == audio
    response_id = events[types.index("response.created")]["response"]["id"]
    assert all(d["response_id"] == response_id and d["item_id"] for d in deltas)
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert transcript["transcript"] == "I heard 1.2 seconds of audio"
    assert events[-1]["response"]["status"] == "completed"
    assert session.items[user["item_id"]]["content"][0]["transcript"] == "(1.2 seconds of audio)"
    await session.close()


async def test_vad_commits_after_500_ms_of_silence() -> None:
    session = await connect(VAD, chunk_interval=0)
    speech, silence = pcm(600, amplitude=3000), pcm(700)
    stream = pcm(100) + speech + silence
    for start in range(0, len(stream), 1000):  # frames that do not line up with VAD windows
        await session.send(append(stream[start : start + 1000]))
    events = await events_until(session, "response.done")
    types = [e["type"] for e in events]
    assert types[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    assert events[0]["audio_start_ms"] == 100
    assert events[1]["audio_end_ms"] == 1200  # 100 + 600 ms of speech + 500 ms of silence
    committed = stream[: 1200 * 48]
    assert replayed(events) == committed
    # what followed the turn stays buffered for the next one
    await session.send('{"type": "input_audio_buffer.commit"}')
    rest = await events_until(session, "response.done")
    assert replayed(rest) == stream[len(committed) :]
    await session.close()


async def test_no_vad_without_turn_detection() -> None:
    session = await connect(MANUAL, chunk_interval=0)
    await session.send(append(pcm(500, amplitude=3000) + pcm(800)))
    await session.send('{"type": "input_audio_buffer.clear", "event_id": "c1"}')
    events = await events_until(session, "input_audio_buffer.cleared")
    assert [e["type"] for e in events] == ["input_audio_buffer.cleared"]
    await session.send('{"type": "input_audio_buffer.commit", "event_id": "c2"}')
    (error,) = await events_until(session, "error")
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "c2"
    await session.close()


async def test_cancel_interrupts_the_replay() -> None:
    session = await connect(chunk_interval=0.02)
    audio = pcm(3000, amplitude=3000)  # 30 chunks
    await session.send(append(audio))
    await session.send('{"type": "input_audio_buffer.commit"}')
    await session.send('{"type": "response.create"}')
    before = await events_until(session, "response.output_audio.delta")
    await session.send('{"type": "response.cancel"}')
    after = await events_until(session, "response.done")
    assert after[-1]["response"]["status"] == "cancelled"
    assert after[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    played = replayed(before + after)
    assert 0 < len(played) < len(audio) and audio.startswith(played)
    await session.send('{"type": "response.create"}')  # nothing further from the old response
    later = await events_until(session, "response.done")
    assert replayed(later) == b"" and later[0]["type"] == "response.created"
    await session.send('{"type": "response.cancel", "event_id": "x"}')
    (error,) = await events_until(session, "error")
    assert error["error"]["code"] == "response_cancel_not_active"
    await session.close()


async def test_speech_interrupts_the_replay() -> None:
    session = await connect(VAD, chunk_interval=0.02)
    await session.send(append(pcm(2000, amplitude=3000) + pcm(500)))
    await events_until(session, "response.output_audio.delta")
    await session.send(append(pcm(100, amplitude=3000)))
    events = await events_until(session, "response.done")
    assert events[-1]["response"]["status"] == "cancelled"
    assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
    assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
    await session.close()


async def test_session_update_and_items() -> None:
    session = await connect(VAD)
    update = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {
                "output": {"voice": "verse", "speed": 1.1},
                "input": {"turn_detection": None},
            },
        },
    }
    await session.send(json.dumps(update))
    (updated,) = await events_until(session, "session.updated")
    assert updated["session"]["audio"]["output"]["voice"] == "verse"
    assert updated["session"]["audio"]["input"]["turn_detection"] is None
    assert session.config.turn_detection is None and session.config.speed == 1.1
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    await session.send(json.dumps({"type": "conversation.item.create", "item": item}))
    added = (await events_until(session, "conversation.item.added"))[-1]["item"]
    await events_until(session, "conversation.item.done")
    assert added["content"] == item["content"] and added["id"] in session.items
    await session.send('{"type": "response.create"}')
    done = await events_until(session, "response.done")
    assert any(e.get("transcript") == "You said: hi" for e in done)
    truncate = {
        "type": "conversation.item.truncate",
        "item_id": added["id"],
        "content_index": 0,
        "audio_end_ms": 0,
    }
    await session.send(json.dumps(truncate))
    assert (await events_until(session, "conversation.item.truncated"))[-1]["item_id"] == added[
        "id"
    ]
    await session.send(json.dumps({"type": "conversation.item.delete", "item_id": added["id"]}))
    assert (await events_until(session, "conversation.item.deleted"))[-1]["item_id"] == added["id"]
    assert added["id"] not in session.items
    await session.send(json.dumps({"type": "conversation.item.delete", "item_id": added["id"]}))
    assert (await events_until(session, "error"))[-1]["error"][
        "code"
    ] == "item_delete_invalid_item_id"
    await session.close()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type": "tool.call", "event_id": "u1"}', "unknown_event"),
        ("not json", "invalid_json"),
        ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_audio"),
        ('{"type": "conversation.item.create", "item": {"id": ["x"]}}', "invalid_value"),
    ],
)
async def test_bad_events_get_error_events(text: str, code: str) -> None:
    session = await connect()
    await session.send(text)
    (error,) = await events_until(session, "error")
    assert error["error"]["code"] == code
    assert error["error"]["type"] == "invalid_request_error"
    await session.close()


async def test_close_ends_the_stream() -> None:
    session = await connect(chunk_interval=0.05)
    await session.send(append(pcm(1000, amplitude=3000)))
    await session.send('{"type": "input_audio_buffer.commit"}')
    await session.send('{"type": "response.create"}')
    await events_until(session, "response.output_audio.delta")
    await session.close()
    await session.close()
    async with asyncio.timeout(5):
        with pytest.raises(UpstreamClosed):
            while True:
                await session.receive()
        with pytest.raises(UpstreamClosed):
            await session.receive()
    with pytest.raises(UpstreamClosed):
        await session.send('{"type": "response.create"}')


# -- what SDK flows depend on (issue 9) ----------------------------------------------------------


async def test_push_to_talk_commit_waits_for_response_create() -> None:
    session = await connect(MANUAL, chunk_interval=0)
    audio = pcm(400, amplitude=3000)
    await session.send(append(audio))
    await session.send('{"type": "input_audio_buffer.commit"}')
    heard = await events_until(session, "conversation.item.input_audio_transcription.completed")
    assert "response.created" not in [e["type"] for e in heard]
    # Nothing more until the client asks (OpenAI's behaviour with turn_detection null).
    create = {"type": "response.create", "response": {"metadata": {"turn": "7"}}}
    await session.send(json.dumps(create))
    events = await events_until(session, "response.done")
    assert replayed(events) == audio
    assert events[0]["type"] == "response.created"
    assert events[0]["response"]["metadata"] == {"turn": "7"}
    assert events[-1]["response"]["metadata"] == {"turn": "7"}
    await session.close()


async def test_retrieve_answers_with_the_item() -> None:
    session = await connect(MANUAL)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    await session.send(json.dumps({"type": "conversation.item.create", "item": item}))
    added = (await events_until(session, "conversation.item.added"))[-1]["item"]
    await session.send(json.dumps({"type": "conversation.item.retrieve", "item_id": added["id"]}))
    retrieved = (await events_until(session, "conversation.item.retrieved"))[-1]
    assert retrieved["item"]["id"] == added["id"]
    assert retrieved["item"]["content"] == item["content"]
    await session.send('{"type": "conversation.item.retrieve", "item_id": "nope", "event_id": "r"}')
    (error,) = await events_until(session, "error")
    assert (
        error["error"]["code"] == "item_retrieve_invalid_item_id"
        and error["error"]["event_id"] == "r"
    )
    await session.close()


async def test_every_event_it_emits_is_a_valid_openai_server_event() -> None:
    """Each event of a busy conversation validates against the `openai` package's models."""
    session = Pulled(await LocalEngine(chunk_interval=0.001).connect(VAD, [Turn("user", "hi")]))
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
    await session.send(append(pcm(100) + pcm(600, amplitude=3000) + pcm(700)))  # a VAD turn
    seen = await events_until(session, "response.done")
    script = [
        json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
            "output": {"voice": "ash"}, "input": {"turn_detection": None}}}}),
        json.dumps({"type": "conversation.item.create", "item": item}),
        '{"type": "response.create", "response": {"metadata": {"k": "v"}}}',
        append(pcm(300, amplitude=3000)),
        '{"type": "input_audio_buffer.commit"}',
        '{"type": "response.create"}',
        '{"type": "response.cancel"}',
        '{"type": "input_audio_buffer.clear"}',
        '{"type": "response.cancel"}',  # nothing active: an error event
        '{"type": "no.such.event"}',
    ]  # fmt: skip
    for event in script:
        await session.send(event)
    await session.send('{"type": "conversation.item.retrieve", "item_id": "missing"}')
    seen += await events_until(session, "error", timeout=10)
    while True:  # everything still coming, until the stream is quiet
        try:
            async with asyncio.timeout(0.3):
                seen.append(json.loads(await session.receive()))
        except TimeoutError:
            break
    kinds = {event["type"] for event in seen}
    assert {"session.created", "session.updated", "response.output_audio.delta",
            "response.done", "conversation.item.input_audio_transcription.completed",
            "input_audio_buffer.speech_started", "error"} <= kinds  # fmt: skip
    for event in seen:
        check_server_event(event)
    await session.close()


async def test_the_conversation_it_keeps_is_bounded() -> None:
    # A client adding items forever: past the bounds the oldest go, each with
    # `conversation.item.deleted`, as OpenAI's `truncation: auto` drops the oldest messages.
    session = await connect(MANUAL, max_items=5, max_item_bytes=4096)
    ids = []
    for i in range(8):
        text = {"type": "input_text", "text": f"turn {i}"}
        item = {"type": "message", "role": "user", "content": [text]}
        await session.send(json.dumps({"type": "conversation.item.create", "item": item}))
        ids.append((await events_until(session, "conversation.item.done"))[-1]["item"]["id"])
    assert list(session.items) == ids[3:]
    big = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "x" * 3500}],
    }
    await session.send(json.dumps({"type": "conversation.item.create", "item": big}))
    events = await events_until(session, "conversation.item.done")
    deleted = [e["item_id"] for e in events if e["type"] == "conversation.item.deleted"]
    assert len(deleted) >= 2  # five small ones and the big one are over 4096 bytes
    assert deleted == ids[3 : 3 + len(deleted)]  # the oldest first
    assert list(session.items) == [*ids[3 + len(deleted) :], events[-1]["item"]["id"]]
    await session.send(json.dumps({"type": "conversation.item.retrieve", "item_id": ids[0]}))
    assert (await events_until(session, "error"))[-1]["error"]["code"] == (
        "item_retrieve_invalid_item_id"
    )
    # An answer's item counts too; the newest item is always kept, however big.
    await session.send(json.dumps({"type": "response.create"}))
    await events_until(session, "response.done")
    assert len(session.items) <= 5
    await session.close()
