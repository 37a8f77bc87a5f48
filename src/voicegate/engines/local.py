"""The local engine (contract §5): an in-process echo that speaks GA Realtime server events.

It needs no network and no credential, for development, demos and tests. Committed audio is played
back byte for byte in chunks, paced so that `response.cancel` (or the user speaking again) can
interrupt it, as it would a real engine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from voicegate.conversation import Turn
from voicegate.engines._ga import (
    BYTES_PER_SECOND,
    assistant_item,
    dumps,
    history_item,
    response_object,
    session_config,
)
from voicegate.engines._vad import EnergyVad
from voicegate.engines.base import Engine, EngineConfig, EngineSession
from voicegate.errors import UpstreamClosed

__all__ = ["LocalEngine", "LocalSession"]

_MAX_BUFFER = BYTES_PER_SECOND * 600  # ten minutes; a dev engine should not eat the host's memory
_AT = {"output_index": 0, "content_index": 0}  # the echo answers with one audio part


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seconds(audio_bytes: int) -> str:
    return f"{audio_bytes / BYTES_PER_SECOND:.1f}"


def _ms(audio_bytes: int) -> int:
    return audio_bytes * 1000 // BYTES_PER_SECOND


class LocalEngine(Engine):
    """Factory of echo conversations.

    `chunk_bytes` is the audio per `response.output_audio.delta` (4800 bytes = 100 ms);
    `chunk_interval` the pause between chunks (the default plays back five times faster than
    real time, leaving a cancel time to land); `speech_rms` the VAD's energy threshold on the
    PCM16 scale.
    """

    name = "local"

    def __init__(
        self, *, chunk_bytes: int = 4800, chunk_interval: float = 0.02, speech_rms: float = 500.0
    ) -> None:
        if chunk_bytes < 2 or chunk_bytes % 2:
            raise ValueError("chunk_bytes must be a positive even number (whole PCM16 samples)")
        self.chunk_bytes = chunk_bytes
        self.chunk_interval = chunk_interval
        self.speech_rms = speech_rms

    async def connect(self, config: EngineConfig, history: list[Turn]) -> LocalSession:
        """Open a conversation; it starts with `session.created` and the replayed history."""
        return LocalSession(self, config, history)


@dataclass(slots=True)
class _Response:
    response_id: str
    item_id: str
    task: asyncio.Task[None] | None = None

    @property
    def ids(self) -> dict[str, str]:
        return {"response_id": self.response_id, "item_id": self.item_id}


class LocalSession(EngineSession):
    """One echo conversation. `config`, `history` and `items` are kept for inspection."""

    def __init__(self, engine: LocalEngine, config: EngineConfig, history: list[Turn]) -> None:
        self.config = replace(config)
        self.history = list(history)
        self.items: dict[str, dict[str, Any]] = {}
        self.session_id = _new_id("sess")
        self._engine = engine
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._event_ids = itertools.count(1)
        self._closed = False
        self._buffer = bytearray()
        self._vad = EnergyVad(engine.speech_rms)
        self._speech_item: str | None = None  # the user item the VAD is hearing
        self._heard = 0  # bytes committed so far: the VAD reports times from the session start
        self._last_item: str | None = None
        self._active: _Response | None = None
        self._emit("session.created", session=self._session_object())
        for turn in self.history:
            self._add_item({**history_item(turn), "id": _new_id("item")})

    async def send(self, event: str) -> None:
        """Handle one GA client event; answers arrive through `receive`."""
        if self._closed:
            raise UpstreamClosed("the local engine conversation is closed", 1000)
        try:
            parsed = json.loads(event)
        except (ValueError, RecursionError):
            self._error("invalid_json", "the event is not valid JSON")
            return
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self._error("unknown_event", f"unknown client event type `{kind}`", _dict(parsed))
            return
        try:
            handler(self, parsed)
        except (TypeError, ValueError, AttributeError):  # a field of the wrong shape
            self._error("invalid_value", f"`{kind}` has a field of the wrong type", parsed)

    async def receive(self) -> str:
        """The next server event; raises `UpstreamClosed` once the conversation is closed."""
        event = await self._outbox.get()
        if event is None:
            self._outbox.put_nowait(None)  # every later call fails the same way
            raise UpstreamClosed("the local engine conversation was closed", 1000)
        return event

    async def close(self) -> None:
        """Stop any playback and end the event stream; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._active is not None and self._active.task is not None:
            self._active.task.cancel()
        self._active = None
        self._outbox.put_nowait(None)

    # -- client events ---------------------------------------------------------------------

    def _on_append(self, event: dict[str, Any]) -> None:
        try:
            audio = base64.b64decode(event.get("audio", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            self._error("invalid_audio", "`audio` must be base64 PCM16", event)
            return
        if len(self._buffer) + len(audio) > _MAX_BUFFER:
            self._error("input_audio_buffer_full", "commit or clear the input audio first", event)
            return
        self._buffer += audio
        if self.config.turn_detection is not None:
            self._detect_turns(self.config.turn_detection)

    def _on_commit(self, event: dict[str, Any]) -> None:
        if not self._buffer:
            self._error("input_audio_buffer_commit_empty", "the input audio buffer is empty", event)
        else:
            self._commit(len(self._buffer), respond=True)

    def _on_clear(self, event: dict[str, Any]) -> None:
        self._buffer.clear()
        self._vad.reset()
        self._speech_item = None
        self._emit("input_audio_buffer.cleared")

    def _on_response_create(self, event: dict[str, Any]) -> None:
        if self._active is not None:
            self._error("conversation_already_has_active_response", "a response is active", event)
        elif self._buffer:
            self._commit(len(self._buffer), respond=True)
        else:
            self._respond(b"", self._text_answer())

    def _on_response_cancel(self, event: dict[str, Any]) -> None:
        if self._active is None:
            self._error("response_cancel_not_active", "no response is in progress", event)
        else:
            self._cancel_response("client_cancelled")

    def _on_session_update(self, event: dict[str, Any]) -> None:
        session = _dict(event.get("session"))
        audio = _dict(session.get("audio"))
        audio_in, output = _dict(audio.get("input")), _dict(audio.get("output"))
        config = self.config
        for source in (session, output):  # the flat beta names, then the GA places
            config.voice = source.get("voice", config.voice)
            config.speed = source.get("speed", config.speed)
        for source in (session, audio_in):
            if "turn_detection" in source:
                config.turn_detection = source["turn_detection"]
                self._vad.reset()
        config.instructions = session.get("instructions", config.instructions)
        config.language = _dict(audio_in.get("transcription")).get("language", config.language)
        self._emit("session.updated", session=self._session_object())

    def _on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            self._error("invalid_value", "`item` must be an object", event)
        else:
            self._add_item({**item, "id": item.get("id") or _new_id("item")})

    def _on_item_truncate(self, event: dict[str, Any]) -> None:
        if str(event.get("item_id")) not in self.items:
            self._error("item_not_found", "no such item", event)
            return
        fields = {k: event.get(k) for k in ("item_id", "content_index", "audio_end_ms")}
        self._emit("conversation.item.truncated", **fields)

    def _on_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or self.items.pop(item_id, None) is None:
            self._error("item_not_found", "no such item", event)
        else:
            self._emit("conversation.item.deleted", item_id=item_id)

    _HANDLERS: ClassVar[dict[str, Callable[[LocalSession, dict[str, Any]], None]]] = {
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_clear,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "session.update": _on_session_update,
        "conversation.item.create": _on_item_create,
        "conversation.item.truncate": _on_item_truncate,
        "conversation.item.delete": _on_item_delete,
    }

    # -- turns and responses ---------------------------------------------------------------

    def _detect_turns(self, detection: dict[str, Any]) -> None:
        silence = detection.get("silence_duration_ms")
        self._vad.silence_ms = silence if isinstance(silence, int) and silence > 0 else 500
        for kind, offset in self._vad.scan(self._buffer):
            if kind == "speech_started":
                self._speech_item = _new_id("item")
                start = {"audio_start_ms": _ms(self._heard + offset), "item_id": self._speech_item}
                self._emit("input_audio_buffer.speech_started", **start)
                if self._active is not None and detection.get("interrupt_response", True):
                    self._cancel_response("turn_detected")  # the user talks over the answer
            else:
                end = {"audio_end_ms": _ms(self._heard + offset), "item_id": self._speech_item}
                self._emit("input_audio_buffer.speech_stopped", **end)
                self._commit(offset, respond=detection.get("create_response", True) is not False)

    def _commit(self, size: int, *, respond: bool) -> None:
        """Commit the first `size` buffered bytes as a user turn, and answer it if `respond`."""
        audio = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._vad.reset()
        item_id, self._speech_item = self._speech_item or _new_id("item"), None
        self._heard += size
        self._emit(
            "input_audio_buffer.committed", previous_item_id=self._last_item, item_id=item_id
        )
        transcript = f"({_seconds(size)} seconds of audio)"
        content = [{"type": "input_audio", "transcript": None}]
        self._add_item({"id": item_id, "type": "message", "role": "user", "content": content})
        content[0]["transcript"] = transcript
        usage = {"type": "duration", "seconds": round(size / BYTES_PER_SECOND, 3)}
        self._emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage=usage,
        )
        if respond:
            self._cancel_response("turn_detected")
            self._respond(audio, f"I heard {_seconds(size)} seconds of audio")

    def _text_answer(self) -> str:
        last = self.items.get(self._last_item or "", {})
        if last.get("role") == "user":  # a text message from the user: echo its words
            for part in last.get("content") or ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    return f"You said: {part['text']}"
        return f"No new audio to echo. I remember {len(self.history)} earlier turns."

    def _respond(self, audio: bytes, transcript: str) -> None:
        response = self._active = _Response(_new_id("resp"), _new_id("item"))
        item = assistant_item(response.item_id, "in_progress", None)
        self._emit(
            "response.created", response=response_object(response.response_id, "in_progress")
        )
        self._emit("response.output_item.added", **response.ids, output_index=0, item=item)
        self._emit("conversation.item.added", previous_item_id=self._last_item, item=item)
        part = {"type": "output_audio", "transcript": ""}
        self._emit("response.content_part.added", **response.ids, **_AT, part=part)
        if audio:
            response.task = asyncio.create_task(self._play(response, audio, transcript))
        else:
            self._finish(response, transcript)

    async def _play(self, response: _Response, audio: bytes, transcript: str) -> None:
        step = self._engine.chunk_bytes
        for offset in range(0, len(audio), step):
            if offset:  # yield between chunks, so that a cancel can land
                await asyncio.sleep(self._engine.chunk_interval)
            delta = base64.b64encode(audio[offset : offset + step]).decode("ascii")
            self._emit("response.output_audio.delta", **response.ids, **_AT, delta=delta)
        self._finish(response, transcript)

    def _finish(self, response: _Response, transcript: str) -> None:
        self._emit("response.output_audio.done", **response.ids, **_AT)
        self._emit(
            "response.output_audio_transcript.delta", **response.ids, **_AT, delta=transcript
        )
        done = {**response.ids, **_AT, "transcript": transcript}
        self._emit("response.output_audio_transcript.done", **done)
        part = {"type": "output_audio", "transcript": transcript}
        self._emit("response.content_part.done", **response.ids, **_AT, part=part)
        self._end(response, "completed", transcript, None)

    def _cancel_response(self, reason: str) -> None:
        """End the active response as cancelled, now; its playback task emits nothing more."""
        response = self._active
        if response is None:
            return
        if response.task is not None:
            response.task.cancel()
        self._emit("response.output_audio.done", **response.ids, **_AT)
        self._end(response, "cancelled", None, {"type": "cancelled", "reason": reason})

    def _end(self, response: _Response, status: str, transcript: str | None, details: Any) -> None:
        item_status = "completed" if status == "completed" else "incomplete"
        item = assistant_item(response.item_id, item_status, transcript)
        where = {"response_id": response.response_id, "output_index": 0}
        self._emit("response.output_item.done", **where, item=item)
        self.items[response.item_id] = item
        self._emit("conversation.item.done", previous_item_id=self._last_item, item=item)
        self._last_item = response.item_id
        body = response_object(response.response_id, status, [item])
        body["status_details"] = details
        self._emit("response.done", response=body)
        self._active = None

    # -- event shapes ----------------------------------------------------------------------

    def _add_item(self, item: dict[str, Any]) -> None:
        item = {**item, "object": "realtime.item", "status": "completed"}
        self.items[item["id"]] = item
        self._emit("conversation.item.added", previous_item_id=self._last_item, item=item)
        self._emit("conversation.item.done", previous_item_id=self._last_item, item=item)
        self._last_item = item["id"]

    def _session_object(self) -> dict[str, Any]:
        session = session_config(self.config)
        session.update(id=self.session_id, object="realtime.session", model="voicegate-local")
        return session

    def _emit(self, kind: str, **fields: Any) -> None:
        if not self._closed:
            event_id = f"event_local_{next(self._event_ids)}"
            self._outbox.put_nowait(dumps({"type": kind, "event_id": event_id, **fields}))

    def _error(self, code: str, message: str, event: dict[str, Any] | None = None) -> None:
        error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if event and isinstance(event.get("event_id"), str):
            error["event_id"] = event["event_id"]
        self._emit("error", error=error)
