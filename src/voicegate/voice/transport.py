"""The seam between a client's transport and the voice session logic.

A transport (the WebSocket server today, a WebRTC data channel later) turns its handshake into a
`ClientHello`, hands it to `VoiceService.open` together with itself as a `ClientTransport`, and
then reports what the client does to the `VoiceConnection` it gets back. The voice layer never
imports a transport; a transport never decides anything about a session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ClientHello", "ClientTransport"]


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a client said when it connected.

    `path` is the endpoint (`/api/v1/ws/voice` or `/v1/realtime`), `query` its query parameters
    (last value wins), `bearer` the `Authorization: Bearer` credential and `subprotocol_key` the
    `openai-insecure-api-key.<key>` one, when given.
    """

    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    bearer: str | None = None
    subprotocol_key: str | None = None

    @property
    def credential(self) -> str | None:
        """The first credential found: `?token=`, then the bearer, then the subprotocol's."""
        return self.query.get("token") or self.bearer or self.subprotocol_key or None

    @property
    def openai_path(self) -> bool:
        """Connected at OpenAI's path (`/v1/realtime`): SDKs that fail on unknown events."""
        return self.path.rstrip("/").endswith("/v1/realtime")


class ClientTransport(Protocol):
    """What the voice layer may ask of a client's transport. Every call returns at once."""

    def send(self, data: bytes | memoryview) -> None:
        """Queue one text message (UTF-8 JSON) for the client; nothing once it is closing."""

    def sender(self) -> Callable[[bytes | memoryview], None]:
        """`send`, as the cheapest callable the transport has: the relay calls it per frame."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame, then drop the connection (at once if the client stopped reading)."""

    def pause_reading(self) -> None:
        """Stop reading the client's messages (they wait in the kernel's buffers)."""

    def resume_reading(self) -> None:
        """Read the client's messages again."""

    def ping(self) -> None:
        """Ask the client for a sign of life (a WebSocket ping)."""
