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

__all__ = [
    "Translated",
    "apply_preferences",
    "error_event",
    "event_type",
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
_VOICE = re.compile(r"[A-Za-z0-9_-]{1,32}")

_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_PASSTHROUGH_FIELDS: dict[
    str, dict[str, type]
] = {  # client events forwarded with these fields only (besides event_id)
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
_TURN_DETECTION_KEYS = frozenset(
    {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
     "interrupt_response", "idle_timeout_ms", "eagerness"}
)  # fmt: skip
_RESPONSE_KEYS = frozenset(
    {"output_modalities", "modalities", "metadata", "conversation", "max_output_tokens", "audio"}
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
        out["audio"] = _get(event, "audio", str)
    elif kind == "interrupt":
        out["type"] = "response.cancel"
    elif kind == "language.detected":
        return _language(event, config)
    elif kind == "session.update":
        return _session_update(event, out)
    elif kind == "response.create":
        if event.get("response") is not None:
            out["response"] = _response_options(event["response"])
    elif kind == "conversation.item.create":
        out["item"] = _item(event.get("item"))
        if isinstance(event.get("previous_item_id"), str):
            out["previous_item_id"] = event["previous_item_id"]
    elif kind in _PASSTHROUGH_FIELDS:
        for name, expected in _PASSTHROUGH_FIELDS[kind].items():
            if name in event:
                out[name] = _get(event, name, expected)
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


def _get(event: dict[str, Any], name: str, expected: type) -> Any:
    value = event.get(name)
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ClientEventError("invalid_value", f"`{name}` must be a {expected.__name__}")
    return value


def _forbidden(path: str) -> ClientEventError:
    return ClientEventError(
        "forbidden_field", f"`{path}` is set by the server and cannot be changed"
    )


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


def _session_update(event: dict[str, Any], out: dict[str, Any]) -> Translated:
    session = event.get("session")
    if not isinstance(session, dict):
        raise ClientEventError("invalid_event", "`session.update` needs a `session` object")
    prefs: dict[str, Any] = {}
    for key, value in session.items():
        if key in ("voice", "speed", "turn_detection"):  # the beta front-end's flat shape
            prefs[key] = value
        elif key in ("input_audio_format", "output_audio_format") and value == "pcm16":
            pass  # what the server uses anyway
        elif key == "type" and value == "realtime":
            pass
        elif key == "audio" and isinstance(value, dict):
            for direction, settings in value.items():
                allowed = {"output": ("voice", "speed"), "input": ("turn_detection",)}.get(
                    direction
                )
                if allowed is None or not isinstance(settings, dict):
                    raise _forbidden(f"session.audio.{direction}")
                for name, setting in settings.items():
                    if name in allowed:
                        prefs[name] = setting
                    elif not (name == "format" and _is_our_format(setting)):
                        raise _forbidden(f"session.audio.{direction}.{name}")
        else:
            raise _forbidden(f"session.{key}")
    _check_preferences(prefs)
    audio: dict[str, Any] = {}
    output = {k: prefs[k] for k in ("voice", "speed") if k in prefs}
    if output:
        audio["output"] = output
    if "turn_detection" in prefs:
        audio["input"] = {"turn_detection": prefs["turn_detection"]}
    out["session"] = {"type": "realtime", "audio": audio} if audio else {"type": "realtime"}
    return Translated(dumps(out), prefs)


def _is_our_format(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") == "audio/pcm"
        and value.get("rate", 24000) == 24000
    )


def _check_preferences(prefs: dict[str, Any]) -> None:
    voice = prefs.get("voice")
    if "voice" in prefs and not (isinstance(voice, str) and _VOICE.fullmatch(voice)):
        raise ClientEventError("invalid_value", "`voice` must be a voice name like `alloy`")
    speed = prefs.get("speed")
    if "speed" in prefs and (
        not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 1.5
    ):
        raise ClientEventError("invalid_value", "`speed` must be a number from 0.25 to 1.5")
    if "turn_detection" in prefs:
        detection = prefs["turn_detection"]
        if detection is None:
            return
        if (
            not isinstance(detection, dict)
            or detection.get("type") not in ("server_vad", "semantic_vad")
            or not detection.keys() <= _TURN_DETECTION_KEYS
            or not all(isinstance(v, str | int | float | None) for v in detection.values())
        ):
            raise ClientEventError(
                "invalid_value",
                "`turn_detection` must be null or {type: server_vad|semantic_vad, ...} with "
                f"keys among {', '.join(sorted(_TURN_DETECTION_KEYS))}",
            )


def _response_options(response: Any) -> dict[str, Any]:
    if not isinstance(response, dict):
        raise ClientEventError("invalid_event", "`response` must be an object")
    for key in response:
        if key not in _RESPONSE_KEYS:
            raise _forbidden(f"response.{key}")
    options = dict(response)
    modalities = options.pop("modalities", None)  # beta name; GA takes one modality
    if isinstance(modalities, list) and "output_modalities" not in options:
        options["output_modalities"] = ["audio"] if "audio" in modalities else ["text"]
    audio = options.get("audio")
    if audio is not None and not (
        isinstance(audio, dict) and audio.keys() <= {"output"} and isinstance(audio["output"], dict)
        and audio["output"].keys() <= {"voice"}
    ):  # fmt: skip
        raise _forbidden("response.audio")
    return options


def _item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ClientEventError("invalid_event", "`conversation.item.create` needs an `item` object")
    if item.get("type", "message") != "message":
        raise _forbidden("item.type")
    role = item.get("role")
    if role == "system":  # a system message would be instructions, which are the server's
        raise _forbidden("item.role")
    if role not in ("user", "assistant"):
        raise ClientEventError("invalid_value", "`item.role` must be `user` or `assistant`")
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise ClientEventError("invalid_value", "`item.content` must be a non-empty list")
    parts = [_content_part(role, part) for part in content]
    rebuilt: dict[str, Any] = {"type": "message", "role": role, "content": parts}
    if isinstance(item.get("id"), str):
        rebuilt["id"] = item["id"]
    return rebuilt


def _content_part(role: str, part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ClientEventError("invalid_value", "each `item.content` part must be an object")
    kind = part.get("type")
    # "text" is the beta name of an assistant's text part.
    if (role, kind) in (
        ("user", "input_text"),
        ("assistant", "output_text"),
        ("assistant", "text"),
    ):
        text = _get(part, "text", str)
        return {"type": "input_text" if role == "user" else "output_text", "text": text}
    if role == "user" and kind == "input_audio":
        rebuilt = {"type": "input_audio", "audio": _get(part, "audio", str)}
        if isinstance(part.get("transcript"), str):
            rebuilt["transcript"] = part["transcript"]
        return rebuilt
    raise ClientEventError("invalid_value", f"content of type `{kind}` is not allowed for {role}")
