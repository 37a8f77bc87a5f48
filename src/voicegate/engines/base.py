"""The engine contract: one conversation with a speech-to-speech engine.

The session code talks to every engine through these two classes and never knows which one it
has. Events cross this boundary as JSON *text* in the GA Realtime protocol, so the relay can pass
audio frames through without decoding them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from voicegate.conversation import Turn


@dataclass(slots=True)
class EngineConfig:
    """What a new engine conversation is configured with (the server's and the user's choices)."""

    instructions: str
    voice: str = "alloy"
    speed: float | None = None
    language: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: {"type": "server_vad"})


class EngineSession(ABC):
    """An open conversation. `send` takes GA client events, `receive` yields GA server events."""

    @abstractmethod
    async def send(self, event: str) -> None:
        """Send one GA client event (JSON text). Raises `UpstreamClosed` if the engine has gone."""

    @abstractmethod
    async def receive(self) -> str:
        """Wait for the next GA server event (JSON text). Raises `UpstreamClosed` when it ends."""

    @abstractmethod
    async def close(self) -> None:
        """Close the conversation; safe to call twice."""


class Engine(ABC):
    """A factory of engine conversations."""

    name: str

    @abstractmethod
    async def connect(self, config: EngineConfig, history: list[Turn]) -> EngineSession:
        """Open a conversation configured with `config`, with `history` replayed into it.

        Raises `UpstreamUnavailable` after the retries, `UpstreamRejected` for a refused
        credential or an exhausted quota (never retried).
        """
