"""Hypothesis strategies for what a hostile or broken client can send (tests/test_fuzz.py).

Frames: arbitrary text (valid UTF-8, and bytes that are not), arbitrary binary, arbitrary JSON,
events shaped like the client protocol's (contract §4) with fields of any shape, and sequences
of all of these. Tokens: validly signed JWTs whose claims are anything at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.servers import TEST_JWT_SECRET

# The client events of contract §4, and a few the gateway does not take.
CLIENT_TYPES = (
    "audio.input",
    "interrupt",
    "language.detected",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "response.create",
    "response.cancel",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "session.update",
    "transcription_session.update",
    "output_audio_buffer.clear",
    "gateway.session",
)

# Text, lone UTF-16 surrogates (what a browser sends for text cut inside an emoji) and control
# characters included: `json.dumps` writes them as escapes, so they travel as valid UTF-8.
characters = st.characters(exclude_categories=())  # hypothesis leaves surrogates out by default
# Text cut inside an emoji (a lone surrogate) and control characters are drawn on purpose:
# uniform drawing from all of Unicode would hardly ever hit them.
cut_texts = st.builds(
    lambda head, cut, tail: head + cut + tail,
    st.text(max_size=10),
    st.sampled_from(["\ud83d", "\ud800", "\udc00", "\udfff", "\n", "\x00", "\u2028"]),
    st.text(max_size=10),
)
texts = st.text(characters, max_size=40) | cut_texts
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and ±Infinity too: Python's json reads them
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(characters, max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

pcm = st.binary(max_size=9600).map(lambda b: b[: len(b) // 2 * 2])
audio = pcm.map(lambda b: base64.b64encode(b).decode()) | texts  # base64 or not
content_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "input_audio", "text", "audio"]) | texts},
    optional={"text": texts | json_values, "audio": audio, "transcript": texts | json_values},
)
item = st.fixed_dictionaries(
    {},
    optional={
        "id": texts | json_values,
        "type": st.sampled_from(["message", "function_call", "function_call_output"]) | texts,
        "role": st.sampled_from(["user", "assistant", "system"]) | texts,
        "content": st.lists(content_part | json_values, max_size=3) | json_values,
        "call_id": texts,
        "output": texts,
    },
)
session = st.fixed_dictionaries(
    {},
    optional={
        "type": st.just("realtime") | texts,
        "instructions": texts,
        "voice": st.sampled_from(["alloy", "verse"]) | json_values,
        "speed": st.floats() | json_values,
        "turn_detection": st.none() | st.just({"type": "server_vad"}) | json_values,
        "audio": json_values,
        "tools": json_values,
    },
)
event_fields = {
    "event_id": texts | json_values,
    "audio": audio | json_values,
    "item": item | json_values,
    "item_id": texts | json_values,
    "previous_item_id": texts | json_values,
    "content_index": json_values,
    "audio_end_ms": json_values,
    "session": session | json_values,
    "response": st.fixed_dictionaries({}, optional={"metadata": json_values}) | json_values,
    "language": texts | json_values,
}
wild_events = st.fixed_dictionaries(
    {"type": st.sampled_from(CLIENT_TYPES) | texts | json_values}, optional=event_fields
).flatmap(
    lambda event: st.dictionaries(st.text(characters, max_size=8), json_values, max_size=2).map(
        lambda extra: {**extra, **event}
    )
)
# Well-formed events of each kind whose text fields are hostile: these get past the shape
# checks to the code that rebuilds and forwards them, which wild events rarely reach.
plausible_events = st.one_of(
    st.builds(
        lambda text, role, kind: {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]},
        },
        texts, st.sampled_from(["user", "assistant", "system"]),
        st.sampled_from(["input_text", "text", "output_text"]),
    ),
    st.builds(
        lambda voice, speed: {"type": "session.update",
                              "session": {"type": "realtime", "voice": voice, "speed": speed,
                                          "audio": {"output": {"voice": voice}}}},
        texts, st.floats() | st.integers(),
    ),
    st.builds(lambda language: {"type": "language.detected", "language": language}, texts),
    st.builds(
        lambda key, value: {"type": "response.create", "response": {"metadata": {key: value}}},
        texts, texts,
    ),
    st.builds(
        lambda kind, item_id: {"type": kind, "item_id": item_id},
        st.sampled_from(["conversation.item.retrieve", "conversation.item.delete",
                         "conversation.item.truncate"]),
        texts,
    ),
    st.builds(lambda kind: {"type": kind}, texts),
    st.builds(lambda audio: {"type": "input_audio_buffer.append", "audio": audio}, texts),
    st.builds(lambda event_id: {"type": "response.cancel", "event_id": event_id}, texts),
)  # fmt: skip
events = plausible_events | wild_events


@dataclass(frozen=True)
class Frame:
    """One WebSocket message: text (`data` is its UTF-8, valid or not) or binary."""

    data: bytes
    text: bool

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"Frame({'text' if self.text else 'binary'}, {self.data[:300]!r})"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text_frame(text: str) -> Frame:
    return Frame(text.encode("utf-8", "surrogatepass"), True)


def _json_frame(value: Any) -> Frame:
    return Frame(json.dumps(value).encode(), True)


text_frames = st.text(characters, max_size=2000).map(
    lambda t: Frame(t.encode("utf-8", "surrogatepass"), True)
)
# Text frames that are not UTF-8 at all: the WebSocket protocol's own business (1007).
invalid_utf8_frames = (
    st.binary(min_size=1, max_size=200).filter(lambda b: not _is_utf8(b)).map(
        lambda b: Frame(b, True)
    )
)  # fmt: skip
binary_frames = st.binary(max_size=4096).map(lambda b: Frame(b, False))
json_frames = json_values.map(_json_frame)
event_frames = events.map(_json_frame)
turn_frames = pcm.map(
    lambda b: Frame(
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b).decode()})
        .encode(),
        True,
    )
) | st.just(_text_frame('{"type":"input_audio_buffer.commit"}'))  # fmt: skip
any_frames = text_frames | binary_frames | json_frames | event_frames | turn_frames
sequences = st.lists(any_frames | event_frames, min_size=1, max_size=8)


def signed(claims: dict[str, Any]) -> str:
    """A token validly signed (HS256, the test secret), whatever its claims hold: signed by
    hand, as PyJWT's encoder refuses some claims (a non-string `iss`) that a verifier must
    still survive."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = part(b'{"alg":"HS256","typ":"JWT"}')
    body = part(json.dumps(claims).encode())  # NaN and Infinity too: Python's json reads them
    signature = hmac.new(TEST_JWT_SECRET.encode(), header + b"." + body, hashlib.sha256)
    return (header + b"." + body + b"." + part(signature.digest())).decode()


# Fixed once: strategy bounds that moved with the clock would make hypothesis's data
# generation differ between runs of one example (FlakyStrategyDefinition).
NOW = int(time.time())


def _claims(draw: st.DrawFn) -> dict[str, Any]:
    now = NOW
    claims: dict[str, Any] = {}
    for name, strategy in (
        ("sub", texts | json_values),
        ("email", texts | json_values),
        ("plan", st.sampled_from(["elite", "Intelia", "free"]) | json_values),
        ("exp", st.integers(now - 600, now + 10**9) | st.floats() | texts | json_values),
        ("iat", st.integers(now - 600, now + 600) | json_values),
        ("nbf", st.integers(now - 600, now + 600) | json_values),
        ("aud", json_values),
        ("iss", json_values),
    ):
        # Mostly present and plausible, so that admission gets past the first check.
        if draw(st.integers(0, 9)) < 8:
            claims[name] = draw(strategy)
    claims.update(draw(st.dictionaries(st.text(characters, max_size=8), json_values, max_size=3)))
    return claims


claims = st.composite(_claims)()
plausible_claims = st.builds(
    lambda sub, email, extra: {
        **extra, "sub": sub, "plan": "elite", "exp": int(time.time()) + 600,
        **({"email": email} if email is not None else {}),
    },
    texts,
    st.none() | texts,
    st.dictionaries(st.text(characters, max_size=8), json_values, max_size=3),
)  # fmt: skip
