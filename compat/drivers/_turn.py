"""What every Python driver shares: the spoken turn, the configuration, the result line.

A driver runs in `.venv-compat` as `python DRIVER.py URL KEY VOICE`, configures its client
with nothing but that base URL and key (as the client's documentation configures it for
OpenAI), asks for VOICE with instructions, a tool and a model, speaks one turn, and prints one
`COMPAT-RESULT {json}` line of what it observed. The suite, not the driver, judges it.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

RATE = 24000
MODEL = "gpt-realtime"
INSTRUCTIONS = "You are a helpful voice assistant. Answer briefly."
TURN_SECONDS = 30.0  # the whole session, connect to the answer's end


def speech(tone_seconds: float = 1.0, silence_seconds: float = 1.0) -> bytes:
    """PCM16 24 kHz mono: a 440 Hz tone (the "speech") then silence, for a VAD to end the turn."""
    n = int(RATE * tone_seconds)
    tone = struct.pack(
        f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / RATE)) for i in range(n))
    )
    return tone + b"\0\0" * int(RATE * silence_seconds)


def chunks(pcm: bytes, ms: int) -> list[bytes]:
    size = RATE * 2 * ms // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def args() -> tuple[str, str, str]:
    url, key, voice = sys.argv[1:4]
    return url, key, voice


def run(turn: Callable[[Result], Awaitable[None]]) -> None:
    """Run a driver's turn under the turn's deadline and report what it saw, whatever
    happens: an exception the client raised is an error the client would show its user."""
    result = Result()

    async def bounded() -> None:
        try:
            async with asyncio.timeout(TURN_SECONDS):
                await turn(result)
        except TimeoutError:
            result.notes.append(f"the turn did not end within {TURN_SECONDS:.0f} s")
        except Exception as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}"[:300])

    asyncio.run(bounded())
    result.report()


@dataclass
class Result:
    """What the client saw: the suite compares it with what it asked for."""

    audio_bytes: int = 0
    response_done: bool = False
    voice: str | None = None  # as the last `session.updated` showed it
    session_updates: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def server_event(self, event: dict[str, Any], *, errors: bool = True) -> None:
        """Note what a raw server event tells (for clients that expose them); `errors=False`
        where the client reports error events itself."""
        kind = event.get("type")
        if kind == "session.updated":
            self.session_updates += 1
            self.voice = session_voice(event.get("session"))
        elif kind == "response.done":
            self.response_done = True
        elif kind == "error" and errors:
            self.errors.append(json.dumps(event.get("error"))[:300])

    def report(self) -> None:
        print("COMPAT-RESULT " + json.dumps(asdict(self)), flush=True)


def session_voice(session: Any) -> str | None:
    """The voice of a GA session object (`audio.output.voice`), or of a beta one (`voice`)."""
    if not isinstance(session, dict):
        return None
    output = (session.get("audio") or {}).get("output") or {}
    voice = output.get("voice", session.get("voice"))
    return voice if isinstance(voice, str) else None


def weather_tool() -> dict[str, Any]:
    """The tool every client declares, in the Realtime API's shape."""
    return {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
