"""The demo page (`GET /`) in a real browser: headless Chromium driven over the DevTools protocol.

Chromium's fake media devices stand in for the microphone, fed from a generated WAV file, so the
page really captures, resamples and sends audio; the local engine's VAD ends the turn and echoes
it back. The DevTools connection uses the `websockets` library the project already depends on.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import os
import re
import shutil
import signal
import struct
import tempfile
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.clients import make_token
from tests.redis_server import RedisServer
from tests.servers import Gateway


def chromium_binary() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = chromium_binary()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium (/usr/bin/chromium or `chromium` on PATH): "
    "`apt-get install chromium` to run the demo page in a real browser",
)

DEV_GATEWAY = {"REDIS_ENABLED": "false", "JWT_SECRET": ""}  # an ephemeral secret: dev tokens


# -- a fake microphone -------------------------------------------------------------------------


def write_voice_wav(path: Path, rate: int = 48000) -> Path:
    """1 s of silence, 1.5 s of loud voice-like sound, 2.5 s of silence (16-bit mono WAV).

    The lead-in leaves the page time to connect before the "speech"; the sound glides in pitch,
    with harmonics and a syllable rhythm, so the browser's noise suppression keeps it; the
    silence after it is longer than the local engine's 500 ms end-of-turn silence.
    """
    frames = bytearray()
    for n in range(int(rate * 1.5)):
        t = n / rate
        pitch = 180 + 120 * math.sin(2 * math.pi * 0.7 * t)
        phase = 2 * math.pi * (180 * t - 120 / (2 * math.pi * 0.7) * math.cos(2 * math.pi * 0.7 * t))
        envelope = 0.6 + 0.4 * math.sin(2 * math.pi * 4 * t)
        value = sum(math.sin(k * phase) / k for k in (1, 2, 3, 4)) * envelope * 0.4
        frames += struct.pack("<h", int(max(-1.0, min(1.0, value)) * 32767))
        del pitch
    silence = bytes(2 * rate)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(silence + bytes(frames) + silence + bytes(rate))
    return path
