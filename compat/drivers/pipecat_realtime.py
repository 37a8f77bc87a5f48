"""Pipecat: `OpenAIRealtimeLLMService(api_key=…, base_url="ws://…/v1/realtime", settings=…)`.

Pipecat builds `f"{base_url}?model={model}"`, so `base_url` is the full endpoint with no query.
It waits for `session.created`, sends its settings (model, instructions, tools, voice) in a
`session.update`, and answers only after `session.updated`. Any error event other than three
routine codes is fatal to it (an `ErrorFrame`, and its receive loop ends).

Headless: no transport and no audio device. Audio frames are queued into the pipeline, and the
audio frames the service pushes downstream are counted.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from _turn import INSTRUCTIONS, MODEL, RATE, Result, args, chunks, run, speech
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner

logger.remove()
logger.add(sys.stderr, level="WARNING")


class Observed(OpenAIRealtimeLLMService):
    """The service as configured, plus a look at the `session.updated` it receives (Pipecat
    has no event for it)."""

    def __init__(self, result: Result, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result

    async def _handle_evt_session_updated(self, evt: Any) -> None:
        self.result.server_event(evt.model_dump(mode="json"))
        await super()._handle_evt_session_updated(evt)


class Watch(FrameProcessor):
    """Counts the answer's audio and notes errors; `ended` is set at the answer's end or an
    error."""

    def __init__(self, result: Result, ended: asyncio.Event) -> None:
        super().__init__()
        self.result, self.ended = result, ended

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.result.audio_bytes += len(frame.audio)
        elif isinstance(frame, TTSStoppedFrame) and self.result.audio_bytes:
            self.result.response_done = True
            self.ended.set()
        elif isinstance(frame, ErrorFrame):
            self.result.errors.append(str(frame.error)[:300])
            self.ended.set()
        await self.push_frame(frame, direction)


async def turn(result: Result) -> None:
    base_url, key, voice = args()
    ended = asyncio.Event()
    tools = ToolsSchema(
        standard_tools=[
            FunctionSchema(
                name="get_weather",
                description="The weather in a city.",
                properties={"city": {"type": "string"}},
                required=["city"],
            )
        ]
    )
    llm = Observed(
        result,
        api_key=key,
        base_url=base_url,
        settings=OpenAIRealtimeLLMService.Settings(
            model=MODEL,
            system_instruction=INSTRUCTIONS,
            session_properties=events.SessionProperties(
                audio=events.AudioConfiguration(output=events.AudioOutput(voice=voice)),
                tools=tools,
            ),
        ),
    )
    # Watch first in the pipeline sees what is pushed upstream (errors), last what goes down.
    worker = PipelineWorker(
        Pipeline([Watch(result, ended), llm, Watch(result, ended)]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        enable_rtvi=False,
    )

    async def speak() -> None:
        for chunk in chunks(speech(), 20):
            await worker.queue_frame(
                InputAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1)
            )
        await ended.wait()
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), speak())


run(turn)
