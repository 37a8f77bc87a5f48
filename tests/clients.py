"""Real WebSocket clients of the voice endpoint, and tokens for them."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, Protocol
from urllib.parse import urlencode

import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.servers import TEST_JWT_SECRET


def make_token(
    user: str = "user-1",
    plan: str | None = "elite",
    *,
    secret: str = TEST_JWT_SECRET,
    ttl: int = 600,
    **claims: Any,
) -> str:
    """An HS256 client token; `plan=None` leaves the plan claim out."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user, "iat": now, "exp": now + ttl, **claims}
    if plan is not None:
        payload["plan"] = plan
    return jwt.encode(payload, secret, algorithm="HS256")


def pcm(seconds: float, amplitude: int = 8000) -> bytes:
    """Loud-enough PCM16 24 kHz mono: a square wave the energy VAD counts as speech."""
    samples = int(24000 * seconds)
    frame = (
        amplitude.to_bytes(2, "little", signed=True) * 12
        + (-amplitude).to_bytes(2, "little", signed=True) * 12
    )
    return (frame * (samples // 24 + 1))[: samples * 2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class VoiceClient:
    """One client connection; `first` is the `gateway.session` message (or None if refused)."""

    def __init__(self, ws: ClientConnection, first: dict[str, Any] | None) -> None:
        self.ws = ws
        self.first = first

    @property
    def session_id(self) -> str:
        assert self.first is not None
        return str(self.first["session_id"])

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(event if isinstance(event, (str, bytes)) else json.dumps(event))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            message: dict[str, Any] = json.loads(await self.ws.recv())
            return message

    async def recv_until(self, kind: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Every event up to and including the first of type `kind`."""
        events = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv(timeout)
                events.append(event)
                if event["type"] == kind:
                    return events

    async def closed(self, timeout: float = 10) -> tuple[int, str]:
        """Wait for the server to close; the close code and reason (other messages skipped)."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed as closed:
                if closed.rcvd is None:  # the TCP connection dropped: a crash
                    return 1006, ""
                return closed.rcvd.code, closed.rcvd.reason

    async def close(self) -> None:
        await self.ws.close()


class Server(Protocol):
    """A running voicegate: `ServerProcess` or `InProcessServer`."""

    @property
    def ws(self) -> str: ...


async def open_voice(
    gateway: Server | str,
    token: str | None = None,
    *,
    session_id: str | None = None,
    events: str | None = None,
    expect_session: bool = True,
) -> VoiceClient:
    """Connect to the voice endpoint; with `expect_session`, read `gateway.session` first."""
    query = {}
    if token is not None:
        query["token"] = token
    if session_id is not None:
        query["session_id"] = session_id
    if events is not None:
        query["events"] = events
    base = gateway if isinstance(gateway, str) else gateway.ws
    ws = await connect(f"{base}?{urlencode(query)}", open_timeout=10, max_size=2**24)
    client = VoiceClient(ws, None)
    if expect_session:
        client.first = await client.recv()
        assert client.first["type"] == "gateway.session", client.first
    return client


async def refused(gateway: Server, token: str | None = None, **kwargs: Any) -> tuple[int, str]:
    """Open a connection that admission refuses; its close code and reason."""
    client = await open_voice(gateway, token, expect_session=False, **kwargs)
    return await client.closed()
