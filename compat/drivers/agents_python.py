"""OpenAI Agents SDK (Python): `RealtimeRunner(agent).run(model_config={"url": …, "api_key": …})`.

The URL is used as given, so it is the full endpoint (`…/v1/realtime?model=…`), as the SDK's
own default is. The SDK sends its whole configuration (instructions, tools, voice, model,
transcription, turn detection) in its first `session.update`, validates every server event
against the `openai` package's models and reports a failure as an `error` session event.
"""

from __future__ import annotations

import asyncio

from _turn import INSTRUCTIONS, MODEL, Result, args, chunks, run, speech
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}."


async def speak(session: RealtimeSession) -> None:
    for chunk in chunks(speech(), 100):
        await session.send_audio(chunk)


async def turn(result: Result) -> None:
    url, key, voice = args()
    agent = RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS, tools=[get_weather])
    runner = RealtimeRunner(
        agent,
        config={"model_settings": {"model_name": MODEL, "voice": voice}},
    )
    session = await runner.run(model_config={"url": url, "api_key": key})
    async with session:
        speaking = asyncio.create_task(speak(session))
        async for event in session:
            if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                result.server_event(event.data.data, errors=False)  # reported as "error" too
            elif event.type == "audio":
                result.audio_bytes += len(event.audio.data)
            elif event.type == "error":  # server errors, and events that failed validation
                result.errors.append(str(event.error)[:300])
            if result.response_done:
                break
        await speaking


run(turn)
