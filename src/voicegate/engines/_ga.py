"""Builders of GA Realtime events shared by the engines and the client protocol.

Shapes follow the GA Realtime API (no `OpenAI-Beta` header): `session.type = "realtime"`, audio
settings under `session.audio.input|output`, assistant history as `output_text` content.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from voicegate.conversation import Turn
from voicegate.engines.base import EngineConfig

# PCM16, 24 kHz, mono, little-endian: the only PCM rate the Realtime API takes, and what the
# original front-end records and plays.
AUDIO_FORMAT: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
SAMPLE_RATE = 24000
BYTES_PER_SECOND = SAMPLE_RATE * 2

# Input transcription is what gives the gateway the user's side of the conversation as text.
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


def dumps(event: dict[str, Any]) -> str:
    """Compact JSON; `type` stays the first key so `protocol.event_type` takes its fast path."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def instructions_for(instructions: str, language: str | None) -> str:
    """The server's instructions, plus one sentence naming the user's language when known."""
    if not language:
        return instructions
    return f"{instructions}\n\nAlways answer in the user's language ({language})."


def transcription_for(language: str | None) -> dict[str, Any]:
    """Input transcription settings; the language only when it is a two-letter ISO-639-1 code."""
    transcription: dict[str, Any] = {"model": TRANSCRIPTION_MODEL}
    primary = (language or "").split("-", 1)[0].lower()
    if len(primary) == 2:
        transcription["language"] = primary
    return transcription


def session_config(config: EngineConfig) -> dict[str, Any]:
    """The GA `session` object for `config` (instructions, voice, formats, VAD, transcription)."""
    output: dict[str, Any] = {"format": dict(AUDIO_FORMAT), "voice": config.voice}
    if config.speed is not None:
        output["speed"] = config.speed
    return {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": instructions_for(config.instructions, config.language),
        "audio": {
            "input": {
                "format": dict(AUDIO_FORMAT),
                "transcription": transcription_for(config.language),
                "turn_detection": config.turn_detection,
            },
            "output": output,
        },
        **({"tools": config.tools} if config.tools is not None else {}),
        **({"tool_choice": config.tool_choice} if config.tool_choice is not None else {}),
    }


_TURN_DETECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "server_vad": {
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    },
    "semantic_vad": {"eagerness": "auto", "create_response": True, "interrupt_response": True},
}


def with_defaults(turn_detection: dict[str, Any] | None) -> dict[str, Any] | None:
    """A turn detection setting with the defaults the Realtime API fills in."""
    if turn_detection is None:
        return None
    defaults = _TURN_DETECTION_DEFAULTS.get(turn_detection.get("type", ""), {})
    return {**defaults, **turn_detection}


def session_update_event(config: EngineConfig) -> str:
    """The GA `session.update` that configures a new conversation with `config`."""
    return dumps({"type": "session.update", "session": session_config(config)})


def history_item(turn: Turn) -> dict[str, Any]:
    """A conversation item replaying `turn` as text (`input_text` or `output_text`)."""
    content_type = "input_text" if turn.role == "user" else "output_text"
    return {
        "type": "message",
        "role": turn.role,
        "content": [{"type": content_type, "text": turn.text}],
    }


def history_events(history: Sequence[Turn]) -> list[str]:
    """One `conversation.item.create` per turn, oldest first."""
    return [dumps({"type": "conversation.item.create", "item": history_item(t)}) for t in history]


def assistant_item(item_id: str, status: str, transcript: str | None) -> dict[str, Any]:
    """An assistant message item of one audio part (as a server event carries it)."""
    content = [{"type": "output_audio", "transcript": transcript}] if transcript else []
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def response_object(
    response_id: str,
    status: str,
    output: list[dict[str, Any]] | None = None,
    *,
    metadata: Any = None,
) -> dict[str, Any]:
    """The `response` of `response.created` and `response.done` (`metadata` echoed back)."""
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "output": output or [],
        "output_modalities": ["audio"],
        "metadata": metadata,
    }
