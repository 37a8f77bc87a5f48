"""A client with the original front-end's exact wire behaviour (`useVoiceRealtime.ts`).

What the hook does, and nothing more: it connects to `<base>/api/v1/ws/voice?token=…` (nothing
else in the URL), sends the microphone as `{"type": "audio.input", "audio": <base64>}` in
ScriptProcessor-sized chunks (4096 samples of PCM16 at 24 kHz), sends `{"type": "interrupt"}`
and, after each transcription, `{"type": "language.detected", "language": …}`. It acts on a
fixed list of event types and logs anything else as unknown; it shows every `error` event to the
user. On any close it reconnects after 2 s with the same URL, at most 3 times in a row (a
successful open resets the count).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CHUNK_SAMPLES = 4096  # createScriptProcessor(4096, 1, 1) at 24 kHz
CHUNK_BYTES = CHUNK_SAMPLES * 2
RECONNECT_DELAY = 2.0
MAX_RECONNECT_ATTEMPTS = 3
HANDLED = frozenset(
    {
        "audio.output",
        "response.audio.delta",
        "response.audio.done",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.input_audio_transcription.completed",
        "response.audio_transcript.delta",
        "session.created",
        "session.updated",
        "session.timeout",
        "error",
        "connection.ready",
        # Silently ignored by the hook, not "unknown".
        "input_audio_buffer.committed",
        "conversation.item.created",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "conversation.item.input_audio_transcription.delta",
    }
)


@dataclass
class LegacyFrontEnd:
    """The hook, driven by a test. `heard` is the audio it would play, byte for byte."""

    url: str  # ws://host:port/api/v1/ws/voice?token=…
    heard: bytearray = field(default_factory=bytearray)
    speaking: bool = False
    unknown: list[str] = field(default_factory=list)
    errors_shown: list[str] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    opens: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    _ws: ClientConnection | None = None
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _attempts: int = 0
    _stopped: bool = False

    async def start(self) -> None:
        """`startConversation()`: connect (and keep reconnecting as the hook does)."""
        self._task = asyncio.create_task(self._run())
        await self.wait_for(lambda: self._ws is not None)

    async def stop(self) -> None:
        """`stopConversation()`: close the WebSocket (code 1000) and stop reconnecting."""
        self._stopped = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def speak(self, pcm: bytes) -> None:
        """The microphone: `pcm` in 4096-sample chunks, each one `audio.input` message."""
        for offset in range(0, len(pcm), CHUNK_BYTES):
            chunk = pcm[offset : offset + CHUNK_BYTES]
            await self._send({"type": "audio.input", "audio": base64.b64encode(chunk).decode()})

    async def interrupt(self) -> None:
        """The interrupt button: `interrupt`, and the local audio queue is cleared."""
        await self._send({"type": "interrupt"})
        self.speaking = False

    async def wait_for(self, predicate: Any, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # -- the hook's connection and message handler --------------------------------------------

    async def _run(self) -> None:
        while not self._stopped:
            try:
                async with connect(self.url, max_size=None, compression="deflate") as ws:
                    await self._opened(ws)
                    async for message in ws:  # ends quietly on a 1000 or 1001 close
                        await self._on_message(json.loads(message))
                frame = ws.protocol.close_rcvd
                await self._closed((frame.code, frame.reason) if frame else (1006, ""))
            except ConnectionClosed as closed:
                frame = closed.rcvd
                await self._closed((frame.code, frame.reason) if frame else (1006, ""))
            except OSError:  # the server is down: onerror, then onclose
                await self._closed((1006, "connection refused"))
            if self._stopped or self._attempts >= MAX_RECONNECT_ATTEMPTS:
                return
            self._attempts += 1
            await asyncio.sleep(RECONNECT_DELAY)

    async def _opened(self, ws: ClientConnection) -> None:
        async with self._changed:
            self._ws = ws
            self.opens += 1
            self._attempts = 0
            self._changed.notify_all()

    async def _closed(self, how: tuple[int, str]) -> None:
        async with self._changed:
            self._ws = None
            self.closes.append(how)
            self._changed.notify_all()

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is not None:  # `readyState !== OPEN`: the chunk is dropped, as in the hook
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(message, separators=(",", ":")))

    async def _on_message(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        async with self._changed:
            self.events.append(data)
            if kind in ("audio.output", "response.audio.delta"):
                audio = data.get("audio") if kind == "audio.output" else data.get("delta")
                if audio:
                    self.heard += base64.b64decode(audio)
                    self.speaking = True
            elif kind == "response.audio.done":
                self.speaking = False
            elif kind == "conversation.item.input_audio_transcription.completed":
                transcript = data.get("transcript")
                if transcript:
                    self.transcripts.append(transcript)
                    await self._send({"type": "language.detected", "language": "en"})
            elif kind == "error":
                error = data.get("error") or {}
                self.errors_shown.append(error.get("message") or data.get("message") or "error")
            elif kind not in HANDLED:
                self.unknown.append(str(kind))
            self._changed.notify_all()
