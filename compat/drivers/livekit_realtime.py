"""LiveKit Agents: `openai.realtime.RealtimeModel(base_url="http://…/v1", api_key=…)`.

LiveKit keeps a `base_url` path other than `/v1` (or ``""``, `/openai`, `/openai/v1`) as it is
and appends `/realtime` to those, keeps the query and adds `model` when absent; the key goes
as Bearer. Its first `session.update` carries voice, formats, transcription and turn detection;
instructions and tools follow as their own `session.update`s. With `--push-to-talk` turn
detection is off: the turn is `commit_audio()` then `generate_reply()`, whose future resolves
only when `response.created` echoes the request's `metadata`.

Headless: no room and no AgentSession, the RealtimeSession used directly.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import aiohttp
from _turn import INSTRUCTIONS, MODEL, RATE, Result, args, chunks, run, speech
from livekit import rtc
from livekit.agents import function_tool
from livekit.plugins import openai

logging.basicConfig(level=logging.WARNING)


@function_tool
async def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}."


async def turn(result: Result) -> None:
    base_url, key, voice = args()
    push_to_talk = "--push-to-talk" in sys.argv
    ended = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        model = openai.realtime.RealtimeModel(
            model=MODEL,
            voice=voice,
            base_url=base_url,
            api_key=key,
            max_session_duration=None,  # the README's advice for a gateway (no 20 min recycling)
            http_session=http,  # needed outside a LiveKit job
            **({"turn_detection": None} if push_to_talk else {}),
        )
        session = model.session()
        session.on("openai_server_event_received", result.server_event)

        def error(event: Any) -> None:  # server errors, and connection failures (after retries)
            result.errors.append(f"session error: {event.error}"[:300])
            ended.set()

        session.on("error", error)

        async def answer(generation: Any) -> None:
            async for message in generation.message_stream:
                async for frame in message.audio_stream:
                    result.audio_bytes += len(frame.data.tobytes())
            ended.set()

        session.on("generation_created", lambda ev: asyncio.ensure_future(answer(ev)))
        try:
            await session.update_instructions(INSTRUCTIONS)
            await session.update_tools([get_weather])
            pcm = speech(silence_seconds=0.2 if push_to_talk else 1.0)
            for chunk in chunks(pcm, 10):
                session.push_audio(rtc.AudioFrame(chunk, RATE, 1, len(chunk) // 2))
            if push_to_talk:
                session.commit_audio()
                await session.generate_reply()  # fails after 10 s without the metadata echo
            await ended.wait()
        finally:
            await session.aclose()
            await model.aclose()


run(turn)
