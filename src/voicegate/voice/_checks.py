"""Checks of the client events that are parsed (everything but the usual audio frames).

Each function takes the parsed event (or a part of it) and returns what may go to the engine,
rebuilt from checked values only, or raises `ClientEventError` naming the field (`param`).
Fields a client may not set (see `ClientPolicy.can_set`) are left out without a word: SDKs send
their whole configuration and treat any error as fatal.
"""

from __future__ import annotations

import re
from typing import Any

from voicegate.errors import ClientEventError

__all__ = ["check_item", "check_response_options", "check_session_update", "require"]

_VOICE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MAX_INSTRUCTIONS = 32 * 1024
_TURN_DETECTION_KEYS = (
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "idle_timeout_ms",
    "create_response",
    "interrupt_response",
    "eagerness",
)
# Where each settable field sits in a GA `session` (beta clients send them flat).
_AUDIO_PLACES = {"voice": "output", "speed": "output", "turn_detection": "input"}
_RESPONSE_KEYS = frozenset(
    {"output_modalities", "metadata", "conversation", "max_output_tokens", "input"}
)


def require(event: dict[str, Any], name: str, expected: type, *, at: str = "") -> Any:
    """`event[name]`, which must be of type `expected` (and not a bool)."""
    value = event.get(name)
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ClientEventError(
            "invalid_value", f"`{at}{name}` must be a {expected.__name__}", param=f"{at}{name}"
        )
    return value


def check_session_update(
    event: dict[str, Any], out: dict[str, Any], can_set: frozenset[str]
) -> dict[str, Any]:
    """Fill `out` with the GA `session.update` for a client's one; return the preferences.

    Only the fields in `can_set` pass (checked); the rest of the client's session is ignored,
    and the engine answers with `session.updated` showing the effective session.
    """
    session = event.get("session")
    if not isinstance(session, dict):
        raise ClientEventError(
            "invalid_event", "`session.update` needs a `session` object", param="session"
        )
    audio = _object(session.get("audio"))
    prefs: dict[str, Any] = {}
    for name, direction in _AUDIO_PLACES.items():
        place = _object(audio.get(direction))
        for source, path in (
            (session, f"session.{name}"),
            (place, f"session.audio.{direction}.{name}"),
        ):
            if name in source and name in can_set:
                prefs[name] = _checked(name, source[name], path)
    for name in ("instructions", "tools", "tool_choice"):
        if name in session and name in can_set:
            prefs[name] = _checked(name, session[name], f"session.{name}")
    out["session"] = session_fields(prefs)
    return prefs


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def session_fields(prefs: dict[str, Any]) -> dict[str, Any]:
    """The GA `session` object that sets `prefs` (the user's choices) and nothing else."""
    session: dict[str, Any] = {"type": "realtime"}
    audio: dict[str, Any] = {}
    for name, direction in _AUDIO_PLACES.items():
        if name in prefs:
            audio.setdefault(direction, {})[name] = prefs[name]
    if audio:
        session["audio"] = audio
    for name in ("instructions", "tools", "tool_choice"):
        if name in prefs:
            session[name] = prefs[name]
    return session


def _checked(name: str, value: Any, path: str) -> Any:
    if name == "voice" and not (isinstance(value, str) and _VOICE.fullmatch(value)):
        raise ClientEventError("invalid_value", f"`{path}` must be a voice name", param=path)
    if name == "speed" and (
        not isinstance(value, int | float) or isinstance(value, bool) or not 0.25 <= value <= 1.5
    ):
        raise ClientEventError("invalid_value", f"`{path}` must be from 0.25 to 1.5", param=path)
    if name == "turn_detection" and value is not None and not _turn_detection_ok(value):
        raise ClientEventError(
            "invalid_value",
            f"`{path}` must be null or {{type: server_vad|semantic_vad, ...}} with valid values "
            f"for {', '.join(_TURN_DETECTION_KEYS[1:])}",
            param=path,
        )
    if name == "instructions" and not (isinstance(value, str) and len(value) <= _MAX_INSTRUCTIONS):
        raise ClientEventError(
            "invalid_value", f"`{path}` must be text of at most 32 KiB", param=path
        )
    if name == "tools" and not (
        isinstance(value, list) and all(isinstance(t, dict) for t in value)
    ):
        raise ClientEventError("invalid_value", f"`{path}` must be a list of tools", param=path)
    if name == "tool_choice" and not isinstance(value, str | dict):
        raise ClientEventError(
            "invalid_value", f"`{path}` must be a string or an object", param=path
        )
    return value


def _turn_detection_ok(detection: Any) -> bool:
    return (
        isinstance(detection, dict)
        and detection.get("type") in ("server_vad", "semantic_vad")
        and all(_turn_setting_ok(k, v) for k, v in detection.items())
    )


def _turn_setting_ok(key: str, value: Any) -> bool:
    if key == "type":
        return value in ("server_vad", "semantic_vad")
    if key in ("create_response", "interrupt_response"):
        return isinstance(value, bool)
    if key == "eagerness":
        return value in ("low", "medium", "high", "auto")
    if key not in _TURN_DETECTION_KEYS or not isinstance(value, int | float | None):
        return False
    if value is None or isinstance(value, bool):
        return key == "idle_timeout_ms" and value is None
    return 0 <= value <= (1 if key == "threshold" else 60_000)


def check_response_options(response: Any, can_set: frozenset[str]) -> dict[str, Any]:
    """The options of a client's `response.create` that it may set; the others are dropped."""
    if not isinstance(response, dict):
        raise ClientEventError("invalid_event", "`response` must be an object", param="response")
    options = {k: v for k, v in response.items() if k in _RESPONSE_KEYS}
    modalities = response.get("modalities")  # beta name; GA takes one modality
    if isinstance(modalities, list) and "output_modalities" not in options:
        options["output_modalities"] = ["audio"] if "audio" in modalities else ["text"]
    audio = response.get("audio")
    output = audio.get("output") if isinstance(audio, dict) else None
    voice = output.get("voice") if isinstance(output, dict) else response.get("voice")
    if voice is not None and "voice" in can_set:
        options["audio"] = {"output": {"voice": _checked("voice", voice, "response.voice")}}
    for name in ("instructions", "tools", "tool_choice"):
        # `instructions: null` (LiveKit's push-to-talk) means "the session's": left out.
        if response.get(name) is not None and name in can_set:
            options[name] = _checked(name, response[name], f"response.{name}")
    if "input" in options and not isinstance(options["input"], list):
        raise ClientEventError(
            "invalid_value", "`response.input` must be a list", param="response.input"
        )
    return options


def check_item(item: Any, can_set: frozenset[str]) -> dict[str, Any]:
    """A client's conversation item, rebuilt: messages of text or audio, tool results."""
    if not isinstance(item, dict):
        raise ClientEventError(
            "invalid_event", "`conversation.item.create` needs an `item` object", param="item"
        )
    kind = item.get("type", "message")
    rebuilt: dict[str, Any]
    if kind == "function_call_output":  # a tool's result, for sessions with operator tools
        rebuilt = {
            "type": kind,
            "call_id": require(item, "call_id", str, at="item."),
            "output": require(item, "output", str, at="item."),
        }
    elif kind == "message":
        rebuilt = _message(item, can_set)
    else:
        raise ClientEventError(
            "invalid_value",
            "`item.type` must be `message` or `function_call_output`",
            param="item.type",
        )
    if isinstance(item.get("id"), str):
        rebuilt["id"] = item["id"]
    return rebuilt


def _message(item: dict[str, Any], can_set: frozenset[str]) -> dict[str, Any]:
    role = item.get("role")
    # A system message would be instructions: only where operators let clients set those.
    roles = ("user", "assistant", "system") if "instructions" in can_set else ("user", "assistant")
    if role not in roles:
        raise ClientEventError(
            "invalid_value", f"`item.role` must be one of {', '.join(roles)}", param="item.role"
        )
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise ClientEventError(
            "invalid_value", "`item.content` must be a non-empty list", param="item.content"
        )
    parts = [_content_part(str(role), part) for part in content]
    return {"type": "message", "role": role, "content": parts}


def _content_part(role: str, part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ClientEventError(
            "invalid_value", "each `item.content` part must be an object", param="item.content"
        )
    kind = part.get("type")
    # "text" is the beta name of an assistant's text part.
    if kind in ("input_text", "output_text", "text"):
        text = require(part, "text", str, at="item.content.")
        return {"type": "output_text" if role == "assistant" else "input_text", "text": text}
    if role == "user" and kind == "input_audio":
        rebuilt = {"type": "input_audio", "audio": require(part, "audio", str, at="item.content.")}
        if isinstance(part.get("transcript"), str):
            rebuilt["transcript"] = part["transcript"]
        return rebuilt
    raise ClientEventError(
        "invalid_value",
        f"content of type `{str(kind)[:32]}` is not allowed for {role}",
        param="item.content.type",
    )
