"""The compatibility suite's verdict on what a client's driver observed (`scripts/compat`
runs the clients themselves; these check the judging and the pins, without installing them)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from compat.install import load_pins
from compat.verdict import judge

SEEN: dict[str, Any] = {
    "audio_bytes": 72000, "response_done": True, "voice": "coral", "session_updates": 1,
    "errors": [], "notes": [],
}  # fmt: skip


def test_a_turn_with_audio_and_the_voice_applied_passes() -> None:
    passed, reason = judge(SEEN, "coral")
    assert passed and reason == "1.5 s of audio back, voice coral applied"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"errors": ['{"code": "unknown_event"}', "x"]},
         'error reached the client: {"code": "unknown_event"} (+1 more)'),
        ({"session_updates": 0, "voice": None},
         "no session.updated for the client's session.update"),
        ({"voice": "alloy"}, "session.updated shows voice 'alloy', the client asked for 'coral'"),
        ({"audio_bytes": 0, "notes": ["closed 1006"]},
         "0 bytes of audio back, expected at least 24000: closed 1006"),
        ({"response_done": False}, "the response never ended (no response.done)"),
    ],
)  # fmt: skip
def test_each_failure_says_why(change: dict[str, Any], expected: str) -> None:
    assert judge({**SEEN, **change}, "coral") == (False, expected)


def test_every_client_is_pinned_to_an_exact_version() -> None:
    pins = load_pins()
    assert pins.python and pins.npm
    for version in [*pins.python.values(), *pins.npm.values()]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
