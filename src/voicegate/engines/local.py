"""The local engine (contract §5): an in-process echo that speaks GA Realtime server events.

It needs no network and no credential, for development, demos and tests. Committed audio is played
back byte for byte in chunks, paced so that `response.cancel` (or the user speaking again) can
interrupt it, as it would a real engine (engines/_replies.py). Events go to the connection as they
are made; while the client is not reading they wait, playback included (engines/_stream.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from voicegate.conversation import Turn
from voicegate.engines._ga import (
    BYTES_PER_SECOND,
    history_item,
    session_config,
    with_defaults,
)
from voicegate.engines._replies import Items, Replies, new_id
from voicegate.engines._stream import EventStream
from voicegate.engines._vad import EnergyVad
from voicegate.engines.base import Engine, EngineConfig, EngineConversation, EngineEvents
from voicegate.errors import UpstreamClosed

__all__ = ["LocalConversation", "LocalEngine"]

_MAX_BUFFER = BYTES_PER_SECOND * 600  # ten minutes; a dev engine should not eat the host's memory


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seconds(audio_bytes: int) -> str:
    return f"{audio_bytes / BYTES_PER_SECOND:.1f}"


def _heard(audio_bytes: int) -> str:
    return f"I heard {_seconds(audio_bytes)} seconds of audio"


def _ms(audio_bytes: int) -> int:
    return audio_bytes * 1000 // BYTES_PER_SECOND


class LocalEngine(Engine):
    """Factory of echo conversations.

    `chunk_bytes` is the audio per `response.output_audio.delta` (4800 bytes = 100 ms);
    `chunk_interval` the pause between chunks (the default plays back five times faster than
    real time, leaving a cancel time to land); `speech_rms` the VAD's energy threshold on the
    PCM16 scale; `max_items` and `max_item_bytes` bound the conversation a session keeps (the
    oldest items are dropped past them, engines/_replies.py).
    """

    name = "local"

    def __init__(
        self,
        *,
        chunk_bytes: int = 4800,
        chunk_interval: float = 0.02,
        speech_rms: float = 500.0,
        # OpenAI bounds a conversation by its context window; this echo keeps twice the turns
        # a session record keeps (VOICE_CONVERSATION_MAX_TURNS, 50), and room for one item
        # of the largest message a client may send (VOICE_MAX_MESSAGE_BYTES, 256 KiB).
        max_items: int = 100,
        max_item_bytes: int = 256 * 1024,
    ) -> None:
        if chunk_bytes < 2 or chunk_bytes % 2:
            raise ValueError("chunk_bytes must be a positive even number (whole PCM16 samples)")
        self.chunk_bytes = chunk_bytes
        self.chunk_interval = chunk_interval
        self.speech_rms = speech_rms
        self.max_items = max_items
        self.max_item_bytes = max_item_bytes

    async def connect(self, config: EngineConfig, history: Sequence[Turn]) -> LocalConversation:
        """Open a conversation; it starts with `session.created` and the replayed history."""
        return LocalConversation(self, config, history)


class LocalConversation(EngineConversation):
    """One echo conversation. `config`, `history` and `items` are kept for inspection."""

    def __init__(self, engine: LocalEngine, config: EngineConfig, history: Sequence[Turn]) -> None:
        self.config = replace(config)
        self.history = list(history)
        self._out = EventStream()
        self._items = Items(self._out, max_items=engine.max_items, max_bytes=engine.max_item_bytes)
        self.items = self._items.by_id
        self._replies = Replies(
            self._out,
            self._items,
            chunk_bytes=engine.chunk_bytes,
            chunk_interval=engine.chunk_interval,
        )
        self._emit, self._error = self._out.emit, self._out.error
        self._buffer = bytearray()
        self._vad = EnergyVad(engine.speech_rms)
        self._speech_item: str | None = None  # the user item the VAD is hearing
        self._heard = 0  # bytes committed so far: the VAD reports times from the session start
        self._unanswered: bytes | None = None  # committed audio that no response answered yet
        self._emit("session.created", session=self._session_object())
        for turn in self.history:
            self._items.add({**history_item(turn), "id": new_id("item")})

    def start(self, events: EngineEvents) -> None:
        self._out.start(events)

    def send(self, event: bytes | str) -> None:
        """Handle one GA client event; the answers go to the connection at once."""
        if self._out.closed:
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

    def pause_reading(self) -> None:
        self._out.pause()

    def resume_reading(self) -> None:
        self._out.resume()

    async def close(self) -> None:
        """Stop any playback; nothing is delivered afterwards. Safe to call twice."""
        self._out.close()
        self._replies.stop()

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
        else:  # with turn detection off, only `response.create` answers (as OpenAI does)
            detection = self.config.turn_detection
            respond = detection is not None and detection.get("create_response") is not False
            self._commit(len(self._buffer), respond=respond)

    def _on_clear(self, event: dict[str, Any]) -> None:
        self._buffer.clear()
        self._vad.reset()
        self._speech_item = None
        self._emit("input_audio_buffer.cleared")

    def _on_response_create(self, event: dict[str, Any]) -> None:
        metadata = _dict(event.get("response")).get("metadata")
        if self._replies.active is not None:
            self._error("conversation_already_has_active_response", "a response is active", event)
        elif self._buffer:
            self._commit(len(self._buffer), respond=True, metadata=metadata)
        elif self._unanswered is not None:  # push-to-talk: commit, then response.create
            audio, self._unanswered = self._unanswered, None
            self._replies.respond(audio, _heard(len(audio)), metadata)
        else:
            self._replies.respond(b"", self._text_answer(), metadata)

    def _on_response_cancel(self, event: dict[str, Any]) -> None:
        if self._replies.active is None:
            self._error("response_cancel_not_active", "no response is in progress", event)
        else:
            self._replies.cancel("client_cancelled")

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
            self._items.add({**item, "id": item.get("id") or new_id("item")})

    def _on_item_truncate(self, event: dict[str, Any]) -> None:
        if str(event.get("item_id")) not in self.items:
            self._error("item_truncate_invalid_item_id", "no such item", event)
            return
        fields = {k: event.get(k) for k in ("item_id", "content_index", "audio_end_ms")}
        self._emit("conversation.item.truncated", **fields)

    def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.items.get(str(event.get("item_id")))
        if item is None:
            self._error("item_retrieve_invalid_item_id", "no such item", event)
        else:
            self._emit("conversation.item.retrieved", item=item)

    def _on_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or not self._items.remove(item_id):
            self._error("item_delete_invalid_item_id", "no such item", event)
        else:
            self._emit("conversation.item.deleted", item_id=item_id)

    _HANDLERS: ClassVar[dict[str, Callable[[LocalConversation, dict[str, Any]], None]]] = {
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_clear,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "session.update": _on_session_update,
        "conversation.item.create": _on_item_create,
        "conversation.item.truncate": _on_item_truncate,
        "conversation.item.delete": _on_item_delete,
        "conversation.item.retrieve": _on_item_retrieve,
    }

    # -- turns and responses ---------------------------------------------------------------

    def _detect_turns(self, detection: dict[str, Any]) -> None:
        silence = detection.get("silence_duration_ms")
        self._vad.silence_ms = silence if isinstance(silence, int) and silence > 0 else 500
        for kind, offset in self._vad.scan(self._buffer):
            if kind == "speech_started":
                self._speech_item = new_id("item")
                start = {"audio_start_ms": _ms(self._heard + offset), "item_id": self._speech_item}
                self._emit("input_audio_buffer.speech_started", **start)
                if self._replies.active is not None and detection.get("interrupt_response", True):
                    self._replies.cancel("turn_detected")  # the user talks over the answer
            else:
                end = {"audio_end_ms": _ms(self._heard + offset), "item_id": self._speech_item}
                self._emit("input_audio_buffer.speech_stopped", **end)
                self._commit(offset, respond=detection.get("create_response", True) is not False)

    def _commit(self, size: int, *, respond: bool, metadata: Any = None) -> None:
        """Commit the first `size` buffered bytes as a user turn, and answer it if `respond`."""
        audio = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._vad.reset()
        item_id, self._speech_item = self._speech_item or new_id("item"), None
        self._heard += size
        self._emit(
            "input_audio_buffer.committed", previous_item_id=self._items.last, item_id=item_id
        )
        transcript = f"({_seconds(size)} seconds of audio)"
        content = [{"type": "input_audio", "transcript": None}]
        self._items.add({"id": item_id, "type": "message", "role": "user", "content": content})
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
            self._unanswered = None
            self._replies.cancel("turn_detected")
            self._replies.respond(audio, _heard(size), metadata)
        else:
            self._unanswered = audio

    def _text_answer(self) -> str:
        last = self.items.get(self._items.last or "", {})
        if last.get("role") == "user":  # a text message from the user: echo its words
            for part in last.get("content") or ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    return f"You said: {part['text']}"
        return f"No new audio to echo. I remember {len(self.history)} earlier turns."

    def _session_object(self) -> dict[str, Any]:
        session = session_config(self.config)
        session["model"] = "voicegate-local"
        # What the engine does, spelled out as OpenAI does (SDKs read `interrupt_response`).
        session["audio"]["input"]["turn_detection"] = with_defaults(self.config.turn_detection)
        return session
