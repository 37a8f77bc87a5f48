"""The official `openai` Python SDK: `AsyncOpenAI(base_url=…/v1, api_key=…)`, then
`client.realtime.connect(model=…)` (the SDK appends `/realtime` and sends the key as Bearer)."""

from __future__ import annotations

import base64

from _turn import INSTRUCTIONS, MODEL, Result, args, chunks, run, speech, weather_tool
from openai import AsyncOpenAI


async def turn(result: Result) -> None:
    base_url, key, voice = args()
    client = AsyncOpenAI(api_key=key, base_url=base_url)
    try:
        async with client.realtime.connect(model=MODEL) as conn:
            await conn.session.update(
                session={
                    "type": "realtime",
                    "model": MODEL,
                    "instructions": INSTRUCTIONS,
                    "tools": [weather_tool()],
                    "output_modalities": ["audio"],
                    "audio": {"output": {"voice": voice}},
                }
            )
            for chunk in chunks(speech(), 100):
                await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            async for event in conn:
                result.server_event(event.to_dict())
                if event.type == "response.output_audio.delta":
                    result.audio_bytes += len(base64.b64decode(event.delta))
                if result.response_done:
                    return
    finally:
        await client.close()


run(turn)
