"""Which names a client hears: the GA Realtime event names, or the beta ones.

The original front-end only knows the beta names (`response.audio.delta`, …) and never asks for
them. With `VOICE_CLIENT_EVENTS=auto` a connection starts with GA names and switches to beta for
good as soon as it asks (`?events=beta`) or speaks the original front-end's own events; the relay
reads the connection's dialect for every server event, so the switch takes effect mid-stream.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

__all__ = ["BETA_NAMES", "Dialect", "event_type", "rename_for_beta"]


class Dialect(enum.Enum):
    GA = "ga"
    BETA = "beta"


BETA_NAMES: dict[bytes, bytes] = {
    b"response.output_audio.delta": b"response.audio.delta",
    b"response.output_audio.done": b"response.audio.done",
    b"response.output_audio_transcript.delta": b"response.audio_transcript.delta",
    b"response.output_audio_transcript.done": b"response.audio_transcript.done",
    b"response.output_text.delta": b"response.text.delta",
    b"response.output_text.done": b"response.text.done",
    b"conversation.item.added": b"conversation.item.created",
}

# `"type"` as the first key, as the Realtime API and both engines write it.
_TYPE_FIRST = re.compile(rb'\s*\{\s*"type"\s*:\s*"([^"\\]*)"')
_HEAD = 128  # the fast path never looks further than this into an event


def event_type(event: bytes | memoryview) -> bytes | None:
    """The `type` of a server event, or None; cheap when `type` is the first key."""
    match = _TYPE_FIRST.match(event, 0, _HEAD)
    if match is not None:
        return match[1]
    parsed = _parse(event)
    kind = parsed.get("type") if parsed is not None else None
    return kind.encode() if isinstance(kind, str) else None


def rename_for_beta(event: bytes | memoryview) -> bytes | memoryview:
    """`event` with its GA type renamed to the beta name, or unchanged when there is none."""
    match = _TYPE_FIRST.match(event, 0, _HEAD)
    if match is not None:
        beta = BETA_NAMES.get(match[1])
        if beta is None:
            return event
        return b"".join((event[: match.start(1)], beta, event[match.end(1) :]))
    parsed = _parse(event)
    kind = parsed.get("type") if parsed is not None else None
    beta = BETA_NAMES.get(kind.encode()) if isinstance(kind, str) else None
    if parsed is None or beta is None:
        return event
    parsed["type"] = beta.decode()
    return json.dumps(parsed, separators=(",", ":")).encode()


def _parse(event: bytes | memoryview) -> dict[str, Any] | None:
    try:
        parsed = json.loads(bytes(event))
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None
