"""The voice WebSocket's client protocol (contract §4), as pure functions.

Audio frames are most of the traffic, so they never go through `json.loads`: `audio.input` and
`input_audio_buffer.append` frames of the usual shape are checked and rewritten as strings, and
server events are renamed for beta clients by touching only their `type`. Every other client
event is parsed, checked against the allowlist and rebuilt, so that what reaches the engine is
exactly what was checked (a duplicate `"type"` key cannot smuggle a second event type past us).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from voicegate.engines._ga import dumps, instructions_for, session_update_event, transcription_for
from voicegate.engines.base import EngineConfig
from voicegate.errors import ClientEventError
from voicegate.voice._checks import (
    check_item,
    check_response_options,
    check_session_update,
    require,
)

__all__ = [
    "Translated",
    "apply_preferences",
    "error_event",
    "event_type",
    "fit_close_reason",
    "rename_for_beta",
    "session_update_event",
    "translate_client_event",
]

# `"type"` as the first key, as the Realtime API and browsers' JSON.stringify write it.
_TYPE_FIRST = re.compile(r'\s*\{\s*"type"\s*:\s*"([^"\\]*)"')
_HEAD = 128  # the fast paths never look further than this into a frame

_ID = r"[A-Za-z0-9_.:-]{1,64}"
_AUDIO_HEAD = re.compile(
    r'\s*\{\s*"type"\s*:\s*"(audio\.input|input_audio_buffer\.append)"\s*,'
    rf'(?:\s*"event_id"\s*:\s*"({_ID})"\s*,)?\s*"audio"\s*:\s*"'
)
_AUDIO_TAIL = re.compile(rf'"(?:\s*,\s*"event_id"\s*:\s*"({_ID})")?\s*\}}\s*')
_EVENT_ID = re.compile(_ID)
_LANGUAGE = re.compile(r"([a-z]{2,3})(?:-([a-z]{2,4}))?", re.IGNORECASE)
_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
# Client events forwarded with these fields only (besides `event_id`).
_PASSTHROUGH_FIELDS: dict[str, dict[str, type]] = {
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "response.cancel": {"response_id": str},
    "conversation.item.delete": {"item_id": str},
    "conversation.item.truncate": {"item_id": str, "content_index": int, "audio_end_ms": int},
}
# Realtime client events that exist but stay the server's business.
_FORBIDDEN_EVENTS = frozenset(
    {"conversation.item.retrieve", "output_audio_buffer.clear", "transcription_session.update"}
)


@dataclass(frozen=True, slots=True)
class Translated:
    """A client event made ready for the engine.

    `upstream` is the GA client event to send (None: nothing to send); `preferences` the user's
    choices it changed (`voice`, `speed`, `turn_detection`, `language`), to store for a resume.
    """

    upstream: str | None
    preferences: dict[str, Any] = field(default_factory=dict)


def event_type(text: str) -> str | None:
    """The `type` of a JSON event, or None; cheap when `type` is the first key."""
    match = _TYPE_FIRST.match(text, 0, _HEAD)
    if match is not None:
        return match[1]
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return None
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else None


def rename_for_beta(text: str) -> str:
    """Rename a GA server event to the beta name the original front-end listens for."""
    match = _TYPE_FIRST.match(text, 0, _HEAD)
    if match is not None:
        beta = _BETA_NAMES.get(match[1])
        return text if beta is None else f"{text[: match.start(1)]}{beta}{text[match.end(1) :]}"
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if isinstance(event, dict) and event.get("type") in _BETA_NAMES:
        event["type"] = _BETA_NAMES[event["type"]]
        return dumps(event)
    return text


def fit_close_reason(reason: str) -> str:
    """`reason` cut to the 123 UTF-8 bytes a WebSocket close frame allows, on a character
    boundary."""
    encoded = reason.encode()
    return reason if len(encoded) <= 123 else encoded[:123].decode("utf-8", "ignore")


def error_event(code: str, message: str) -> str:
    """The error event the gateway sends a client whose message it refused."""
    error = {"type": "invalid_request_error", "code": code, "message": message}
    return dumps({"type": "error", "error": error})


def translate_client_event(text: str, config: EngineConfig) -> Translated:
    """Check a client's text message against the allowlist and turn it into a GA client event.

    `config` is the conversation's configuration (its `instructions` are the server's, used when
    the language changes). Raises `ClientEventError` with code `invalid_json`, `invalid_event`,
    `missing_type`, `unknown_event`, `forbidden_event`, `forbidden_field` or `invalid_value`.
    """
    fast = _audio_fast_path(text)
    if fast is not None:
        return Translated(fast)
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        raise ClientEventError("invalid_json", "the message is not valid JSON") from None
    if not isinstance(event, dict):
        raise ClientEventError("invalid_event", "an event must be a JSON object")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise ClientEventError("missing_type", "the event has no `type`")
    out: dict[str, Any] = {"type": kind}
    event_id = event.get("event_id")
    if isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id):
        out["event_id"] = event_id
    if kind in ("audio.input", "input_audio_buffer.append"):
        out["type"] = "input_audio_buffer.append"
        out["audio"] = require(event, "audio", str)
    elif kind == "interrupt":
        out["type"] = "response.cancel"
    elif kind == "language.detected":
        return _language(event, config)
    elif kind == "session.update":
        preferences = check_session_update(event, out)
        return Translated(dumps(out), preferences)
    elif kind == "response.create":
        if event.get("response") is not None:
            out["response"] = check_response_options(event["response"])
    elif kind == "conversation.item.create":
        out["item"] = check_item(event.get("item"))
        if isinstance(event.get("previous_item_id"), str):
            out["previous_item_id"] = event["previous_item_id"]
    elif kind in _PASSTHROUGH_FIELDS:
        for name, expected in _PASSTHROUGH_FIELDS[kind].items():
            if name in event:
                out[name] = require(event, name, expected)
    elif kind in _FORBIDDEN_EVENTS:
        raise ClientEventError("forbidden_event", f"`{kind}` is not allowed on this gateway")
    else:
        raise ClientEventError("unknown_event", f"unknown event type `{kind[:64]}`")
    return Translated(dumps(out))


def apply_preferences(config: EngineConfig, preferences: dict[str, Any]) -> EngineConfig:
    """A copy of `config` with stored user preferences applied (for a resumed session)."""
    names = ("voice", "speed", "language", "turn_detection")
    changes: dict[str, Any] = {name: preferences[name] for name in names if name in preferences}
    return replace(config, **changes)


def _audio_fast_path(text: str) -> str | None:
    """The GA append event for an audio frame of the usual shape, without parsing it; else None."""
    head = _AUDIO_HEAD.match(text)
    if head is None:
        return None
    start = head.end()
    end = text.find('"', start)
    # No quote or backslash inside the payload: the frame is one flat object, nothing escaped.
    if end < 0 or text.find("\\", start, end) >= 0:
        return None
    tail = _AUDIO_TAIL.fullmatch(text, end)
    if tail is None or (head[2] and tail[1]):
        return None
    if head[1] == "input_audio_buffer.append":
        return text
    event_id = head[2] or tail[1]
    id_part = f'"event_id":"{event_id}",' if event_id else ""
    return f'{{"type":"input_audio_buffer.append",{id_part}"audio":"{text[start:end]}"}}'


def _language(event: dict[str, Any], config: EngineConfig) -> Translated:
    language = event.get("language")
    match = _LANGUAGE.fullmatch(language) if isinstance(language, str) else None
    if match is None:
        raise ClientEventError("invalid_value", "`language` must be a code like `en` or `pt-BR`")
    language = match[1].lower() + (f"-{match[2]}" if match[2] else "")
    session = {
        "type": "realtime",
        "instructions": instructions_for(config.instructions, language),
        "audio": {"input": {"transcription": transcription_for(language)}},
    }
    return Translated(dumps({"type": "session.update", "session": session}), {"language": language})
