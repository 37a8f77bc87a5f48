"""The voice WebSocket's client protocol (contract §4), as pure functions over bytes.

Audio frames are most of the traffic, so they never go through `json.loads`: `audio.input` and
`input_audio_buffer.append` frames of the usual shape are checked and rewritten as bytes. Every
other client event is parsed, checked and rebuilt, so that what reaches the engine is exactly
what was checked (a duplicate `"type"` key cannot smuggle a second event type past us). Session
fields a client may not set are dropped, not refused (`ClientPolicy.can_set`), because SDKs send
their whole configuration and stop at the first error.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from voicegate.engines._ga import dumps, instructions_for, transcription_for
from voicegate.errors import ClientEventError
from voicegate.voice._checks import (
    check_item,
    check_response_options,
    check_session_update,
    require,
)

__all__ = [
    "CANCEL",
    "ClientPolicy",
    "Translated",
    "error_event",
    "fit_close_reason",
    "translate_client_event",
]

_ID = rb"[A-Za-z0-9_.:-]{1,64}"
_AUDIO_HEAD = re.compile(
    rb'\s*\{\s*"type"\s*:\s*"(audio\.input|input_audio_buffer\.append)"\s*,'
    rb'(?:\s*"event_id"\s*:\s*"(' + _ID + rb')"\s*,)?\s*"audio"\s*:\s*"'
)
_AUDIO_TAIL = re.compile(rb'"(?:\s*,\s*"event_id"\s*:\s*"(' + _ID + rb')")?\s*\}\s*')
_EVENT_ID = re.compile(_ID.decode())
_LANGUAGE = re.compile(r"([a-z]{2,3})(?:-([a-z]{2,4}))?", re.IGNORECASE)
# The original front-end's own events: a client that speaks them hears beta event names.
LEGACY_EVENTS = frozenset({"audio.input", "interrupt", "language.detected"})
CANCEL = b'{"type":"response.cancel"}'
# Client events forwarded with these fields only (besides `event_id`).
_PASSTHROUGH_FIELDS: dict[str, dict[str, type]] = {
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "response.cancel": {"response_id": str},
    "conversation.item.delete": {"item_id": str},
    "conversation.item.retrieve": {"item_id": str},
    "conversation.item.truncate": {"item_id": str, "content_index": int, "audio_end_ms": int},
}


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What clients may do: the session fields they may set (VOICE_CLIENT_CAN_SET) and the
    server's instructions (used when the original front-end reports the user's language)."""

    can_set: frozenset[str]
    instructions: str


@dataclass(frozen=True, slots=True)
class Translated:
    """A client event made ready for the engine.

    `upstream` is the GA client event to send (None: nothing to send); `preferences` the user's
    choices it changed, to store for a resume; `legacy` says it was one of the original
    front-end's events; `if_responding` that it is an `interrupt`, to send only while an answer
    is being played.
    """

    upstream: bytes | None
    preferences: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False
    if_responding: bool = False


_APPEND_HEAD = b'{"type":"input_audio_buffer.append",'
_EVENT_ID_KEY = b'"event_id":"'
_AUDIO_KEY = b'"audio":"'
_AT_HEAD, _AFTER_HEAD = slice(len(_APPEND_HEAD)), len(_APPEND_HEAD)
_AT_ID_KEY = slice(_AFTER_HEAD, _AFTER_HEAD + len(_EVENT_ID_KEY))


def audio_fast_path(payload: bytes) -> tuple[bytes, bool] | None:
    """The GA append event for an audio frame of the usual shape, without parsing it, and
    whether it was the original front-end's `audio.input`; else None."""
    # Slices compared, not startswith/endswith with offsets: on every frame, those bytes
    # methods' argument parsing costs more than the comparisons.
    if payload[_AT_HEAD] == _APPEND_HEAD:  # compact, as SDKs and the bench write it: as is
        start = _AFTER_HEAD
        if payload[_AT_ID_KEY] == _EVENT_ID_KEY:
            start = payload.find(b'",', _AT_ID_KEY.stop) + 2
        if (
            start > 1
            and payload[start : start + len(_AUDIO_KEY)] == _AUDIO_KEY
            and payload[-2:] == b'"}'
            and payload.find(b'"', start + len(_AUDIO_KEY)) == len(payload) - 2
            # find, not `in`: on bytes, `in` first tries the needle as an int and raises inside
            and payload.find(b"\\") < 0
            and payload.isascii()
        ):
            return payload, False
    return _audio_frame(payload)


def _audio_frame(payload: bytes) -> tuple[bytes, bool] | None:
    """`audio_fast_path` for the other usual shapes: `audio.input`, spaces, `event_id` last."""
    head = _AUDIO_HEAD.match(payload)
    if head is None or not payload.isascii():  # ASCII: valid UTF-8, no escapes to decode
        return None
    start = head.end()
    end = payload.find(b'"', start)
    # No quote or backslash inside the payload: the frame is one flat object, nothing escaped.
    if end < 0 or payload.find(b"\\", start, end) >= 0:
        return None
    tail = _AUDIO_TAIL.fullmatch(payload, end)
    if tail is None or (head[2] and tail[1]):
        return None
    if head[1] == b"input_audio_buffer.append":
        return payload, False
    event_id = head[2] or tail[1]
    id_part = b'"event_id":"' + event_id + b'",' if event_id else b""
    audio = payload[start:end]
    return b'{"type":"input_audio_buffer.append",' + id_part + b'"audio":"' + audio + b'"}', True


def translate_client_event(payload: bytes, policy: ClientPolicy) -> Translated:
    """Check a client's text message and turn it into a GA client event.

    Raises `ClientEventError` with code `invalid_json`, `invalid_event`, `missing_type`,
    `unknown_event`, `invalid_value` or `invalid_text`, naming the client's `event_id` when it
    had one and the field at fault (`param`) when there is one.
    """
    fast = audio_fast_path(payload)
    if fast is not None:
        return Translated(fast[0], legacy=fast[1])
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ClientEventError("invalid_json", "the message is not valid JSON") from None
    if not isinstance(event, dict):
        raise ClientEventError("invalid_event", "an event must be a JSON object")
    event_id = event.get("event_id")
    if not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
        event_id = None
    try:
        return _translate(event, event_id, policy)
    except ClientEventError as exc:
        exc.event_id = event_id
        raise


def _translate(event: dict[str, Any], event_id: str | None, policy: ClientPolicy) -> Translated:
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise ClientEventError("missing_type", "the event has no `type`", param="type")
    out: dict[str, Any] = {"type": kind}
    if event_id is not None:
        out["event_id"] = event_id
    if kind in ("audio.input", "input_audio_buffer.append"):
        out["type"] = "input_audio_buffer.append"
        out["audio"] = require(event, "audio", str)
        return Translated(_encode(out), legacy=kind == "audio.input")
    if kind == "interrupt":
        return Translated(CANCEL, legacy=True, if_responding=True)
    if kind == "language.detected":
        return _language(event, policy)
    if kind == "session.update":
        preferences = check_session_update(event, out, policy.can_set)
        return Translated(_encode(out), preferences)
    if kind == "response.create":
        if event.get("response") is not None:
            out["response"] = check_response_options(event["response"], policy.can_set)
    elif kind == "conversation.item.create":
        out["item"] = check_item(event.get("item"), policy.can_set)
        if isinstance(event.get("previous_item_id"), str):
            out["previous_item_id"] = event["previous_item_id"]
    elif kind in _PASSTHROUGH_FIELDS:
        for name, expected in _PASSTHROUGH_FIELDS[kind].items():
            if name in event:
                out[name] = require(event, name, expected)
    else:
        raise ClientEventError(
            "unknown_event", f"unknown event type `{_printable(kind)}`", param="type"
        )
    return Translated(_encode(out))


def _encode(event: dict[str, Any]) -> bytes:
    """UTF-8 JSON of a rebuilt event; a lone UTF-16 surrogate (text cut inside an emoji by a
    browser) cannot be encoded and is refused instead of breaking the connection."""
    try:
        return dumps(event).encode("utf-8")
    except UnicodeEncodeError:
        raise ClientEventError(
            "invalid_text", "text must be valid Unicode (a lone UTF-16 surrogate was sent)"
        ) from None


def _language(event: dict[str, Any], policy: ClientPolicy) -> Translated:
    language = event.get("language")
    match = _LANGUAGE.fullmatch(language) if isinstance(language, str) else None
    if match is None:
        raise ClientEventError(
            "invalid_value", "`language` must be a code like `en` or `pt-BR`", param="language"
        )
    language = match[1].lower() + (f"-{match[2]}" if match[2] else "")
    session = {
        "type": "realtime",
        "instructions": instructions_for(policy.instructions, language),
        "audio": {"input": {"transcription": transcription_for(language)}},
    }
    upstream = _encode({"type": "session.update", "session": session})
    return Translated(upstream, {"language": language}, legacy=True)


def error_event(error: ClientEventError) -> bytes:
    """The `error` event of the Realtime API for a refused client message.

    ASCII-only JSON: a message may quote what the client sent, lone surrogates included.
    """
    body = {
        "type": "invalid_request_error",
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "event_id": error.event_id,
    }
    event = {"type": "error", "event_id": f"event_gw_{secrets.token_hex(8)}", "error": body}
    return json.dumps(event, separators=(",", ":")).encode()


def fit_close_reason(reason: str) -> str:
    """`reason` cut to the 123 UTF-8 bytes a WebSocket close frame allows, on a character
    boundary."""
    encoded = reason.encode("utf-8", "replace")
    return reason if len(encoded) <= 123 else encoded[:123].decode("utf-8", "ignore")


def _printable(text: str) -> str:
    return text[:64].encode("utf-8", "backslashreplace").decode("utf-8")
