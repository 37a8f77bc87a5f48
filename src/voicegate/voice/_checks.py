"""Checks of the client events that are parsed (everything but the usual audio frames).

Each function takes the parsed event (or a part of it) and returns what may go to the engine,
rebuilt from the checked values only, or raises `ClientEventError`.
"""

from __future__ import annotations

import re
from typing import Any

from voicegate.errors import ClientEventError

__all__ = ["check_item", "check_response_options", "check_session_update", "forbidden", "require"]

_VOICE = re.compile(r"[A-Za-z0-9_-]{1,32}")

_TURN_DETECTION_KEYS = (
    "type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms",
    "create_response", "interrupt_response", "eagerness",
)  # fmt: skip
# What a client may set under `session.audio` (GA shape).
_SESSION_AUDIO = {"output": ("voice", "speed"), "input": ("turn_detection",)}
_RESPONSE_KEYS = frozenset(
    {"output_modalities", "modalities", "metadata", "conversation", "max_output_tokens", "audio"}
)


def require(event: dict[str, Any], name: str, expected: type) -> Any:
    """`event[name]`, which must be of type `expected` (and not a bool)."""
    value = event.get(name)
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ClientEventError("invalid_value", f"`{name}` must be a {expected.__name__}")
    return value


def forbidden(path: str) -> ClientEventError:
    """The error for a field the server owns, naming it."""
    return ClientEventError(
        "forbidden_field", f"`{path}` is set by the server and cannot be changed"
    )


def check_session_update(event: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Fill `out` with the GA `session.update` for a client's one; return the preferences."""
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
                allowed = _SESSION_AUDIO.get(direction)
                if allowed is None or not isinstance(settings, dict):
                    raise forbidden(f"session.audio.{direction}")
                for name, setting in settings.items():
                    if name in allowed:
                        prefs[name] = setting
                    elif not (name == "format" and _is_our_format(setting)):
                        raise forbidden(f"session.audio.{direction}.{name}")
        else:
            raise forbidden(f"session.{key}")
    _check_preferences(prefs)
    audio: dict[str, Any] = {}
    output = {k: prefs[k] for k in ("voice", "speed") if k in prefs}
    if output:
        audio["output"] = output
    if "turn_detection" in prefs:
        audio["input"] = {"turn_detection": prefs["turn_detection"]}
    out["session"] = {"type": "realtime", "audio": audio} if audio else {"type": "realtime"}
    return prefs


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
        if detection is not None and not (
            isinstance(detection, dict)
            and detection.get("type") in ("server_vad", "semantic_vad")
            and all(_turn_setting_ok(k, v) for k, v in detection.items())
        ):
            raise ClientEventError(
                "invalid_value",
                "`turn_detection` must be null or {type: server_vad|semantic_vad, ...} with "
                f"valid values for {', '.join(_TURN_DETECTION_KEYS[1:])}",
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


def check_response_options(response: Any) -> dict[str, Any]:
    """The options of a client's `response.create`, without the server-owned ones."""
    if not isinstance(response, dict):
        raise ClientEventError("invalid_event", "`response` must be an object")
    for key in response:
        if key not in _RESPONSE_KEYS:
            raise forbidden(f"response.{key}")
    options = dict(response)
    modalities = options.pop("modalities", None)  # beta name; GA takes one modality
    if isinstance(modalities, list) and "output_modalities" not in options:
        options["output_modalities"] = ["audio"] if "audio" in modalities else ["text"]
    audio = options.get("audio")
    if audio is not None and not (
        isinstance(audio, dict) and audio.keys() <= {"output"} and isinstance(audio["output"], dict)
        and audio["output"].keys() <= {"voice"}
    ):  # fmt: skip
        raise forbidden("response.audio")
    return options


def check_item(item: Any) -> dict[str, Any]:
    """A client's conversation item, rebuilt: user or assistant messages of text or audio."""
    if not isinstance(item, dict):
        raise ClientEventError("invalid_event", "`conversation.item.create` needs an `item` object")
    if item.get("type", "message") != "message":
        raise forbidden("item.type")
    role = item.get("role")
    if role == "system":  # a system message would be instructions, which are the server's
        raise forbidden("item.role")
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
        text = require(part, "text", str)
        return {"type": "input_text" if role == "user" else "output_text", "text": text}
    if role == "user" and kind == "input_audio":
        rebuilt = {"type": "input_audio", "audio": require(part, "audio", str)}
        if isinstance(part.get("transcript"), str):
            rebuilt["transcript"] = part["transcript"]
        return rebuilt
    raise ClientEventError("invalid_value", f"content of type `{kind}` is not allowed for {role}")
