"""A client of a live gateway for `voicegate verify`: HTTP reads, voice connections, audio turns.

Every failure is a `Failed` whose message says what was seen, in an operator's words; the
checks turn them into ❌ lines.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voicegate._redact import mask_url
from voicegate.cli._causes import causes

OK, FAIL = "✅", "❌"
RATE = 24_000  # PCM16 mono samples per second, as the Realtime API expects
# 1 s of a 1 kHz square wave: loud enough that an engine's voice activity detection hears speech.
PROBE_AUDIO = (struct.pack("<h", 8000) * 12 + struct.pack("<h", -8000) * 12) * (RATE // 24)
CHUNK_BYTES = 4_800  # 100 ms per append, as a browser client sends it
ENDINGS = ("session.timeout", "gateway.draining")  # the gateway's notices before it closes


class Failed(Exception):
    """A check failed; the message says what was measured."""


class Unreachable(Failed):
    """The base URL does not answer at all: every other check would only repeat it."""


class Refused(Failed):
    """Admission closed the WebSocket before `gateway.session`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"refused with close {code}: {reason or '(no reason)'}")
        self.code, self.reason = code, reason


class Ended(Failed):
    """The gateway ended the session on its own: `session.timeout` (the connection cap was
    reached) or `gateway.draining` (it is restarting)."""

    def __init__(self, event: dict[str, Any]) -> None:
        self.kind = str(event.get("type"))
        self.max_seconds = event.get("max_seconds")
        if self.kind == "session.timeout":
            cap = f" ({self.max_seconds:g} s)" if isinstance(self.max_seconds, int | float) else ""
            said = f"session.timeout: the connection cap{cap}, VOICE_MAX_SESSION_SECONDS, ended it"
        else:
            said = "gateway.draining: the gateway is restarting and closed the session"
        super().__init__(said)


def why(exc: BaseException) -> str:
    """The root cause of a connection failure, in an operator's words."""
    for cause in causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the gateway running, on this host and port?)"
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed ({cause.strerror})"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({cause.verify_message})"
    return str(exc) or type(exc).__name__


def closed_said(closed: ConnectionClosed) -> str:
    return f"{closed.rcvd.code} {closed.rcvd.reason}" if closed.rcvd else "no close frame"


@dataclass(frozen=True, slots=True)
class Turn:
    """One audio turn: the response's status, the audio that came back, and how long after the
    commit its first chunk came (None when none did)."""

    status: str
    audio: bytes
    latency: float | None
    error: str

    def check(self, engine: str, sent: bytes) -> None:
        """`Failed` unless the turn answered as it should: audio back, byte for byte from the
        local engine."""
        if self.status != "completed" or self.latency is None:
            said = f" (error: {self.error})" if self.error else ""
            raise Failed(
                f"response.done with status {self.status}{said}, {len(self.audio)} bytes of audio"
            )
        if engine == "local" and self.audio != sent:
            raise Failed(
                f"the local engine's echo differs: sent {len(sent)} bytes, "
                f"got {len(self.audio)} back"
            )


async def audio_turn(ws: ClientConnection, engine: str, audio: bytes = PROBE_AUDIO) -> Turn:
    """Send `audio` as a browser does (appends, then a commit) and read up to `response.done`."""
    try:
        for offset in range(0, len(audio), CHUNK_BYTES):
            chunk = base64.b64encode(audio[offset : offset + CHUNK_BYTES]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await ws.send('{"type": "input_audio_buffer.commit"}')
        committed = time.perf_counter()
        if engine != "local":  # with server VAD, OpenAI answers a manual commit only if asked
            await ws.send('{"type": "response.create"}')
        received, first_audio, error = bytearray(), None, ""
        while True:
            event = json.loads(await ws.recv())
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "response.output_audio.delta":
                first_audio = first_audio or time.perf_counter()
                received += base64.b64decode(event.get("delta", ""))
            elif kind == "error":
                error = str(event.get("error", {}).get("message", ""))
            elif kind in ENDINGS:
                raise Ended(event)
            elif kind == "response.done":
                status = str(event.get("response", {}).get("status"))
                latency = None if first_audio is None else first_audio - committed
                return Turn(status, bytes(received), latency, error)
    except ConnectionClosed as closed:
        # A send that failed because the gateway had just closed: what it said before closing
        # (`session.timeout`, `gateway.draining`) is still waiting to be read.
        ending = await _last_words(ws)
        if ending is not None:
            raise Ended(ending) from None
        raise Failed(f"connection closed during the response ({closed_said(closed)})") from None


async def _last_words(ws: ClientConnection) -> dict[str, Any] | None:
    """The `session.timeout` or `gateway.draining` among the messages a closed connection still
    holds, if any."""
    try:
        async with asyncio.timeout(1):  # they are buffered: nothing to wait for, really
            while True:
                event = json.loads(await ws.recv())
                if isinstance(event, dict) and event.get("type") in ENDINGS:
                    return event
    except (ConnectionClosed, TimeoutError):
        return None


class GatewayClient:
    """HTTP reads and voice connections to the gateway at `base`, each bounded by `timeout`."""

    def __init__(self, base: str, timeout: float, http: httpx.AsyncClient) -> None:
        self.base, self.timeout, self.http = base, timeout, http
        scheme, rest = base.split("://", 1)
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/v1/ws/voice"

    async def get(self, path: str) -> httpx.Response:
        try:
            return await self.http.get(self.base + path)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(f"cannot reach {mask_url(self.base)}: {why(exc)}") from None
        except httpx.HTTPError as exc:
            raise Failed(f"GET {path} failed: {why(exc)}") from None

    async def open(
        self, token: str, session_id: str | None = None
    ) -> tuple[ClientConnection, dict[str, Any]]:
        """A voice connection and its `gateway.session` message, or `Failed` saying why not."""
        query = {"token": token, **({"session_id": session_id} if session_id else {})}
        try:
            ws = await connect(f"{self.ws_url}?{urlencode(query)}", open_timeout=self.timeout)
        except InvalidStatus as exc:
            code = exc.response.status_code
            raise Failed(f"WebSocket upgrade refused with HTTP {code}") from None
        except (OSError, InvalidHandshake) as exc:
            raise Failed(f"cannot open the WebSocket: {why(exc)}") from None
        try:
            first = json.loads(await ws.recv())
        except ConnectionClosed as closed:
            frame = closed.rcvd
            raise Refused(frame.code if frame else 1006, frame.reason if frame else "") from None
        if not isinstance(first, dict) or first.get("type") != "gateway.session":
            await ws.close()
            raise Failed(f"first message was not gateway.session: {str(first)[:80]}")
        return ws, first
