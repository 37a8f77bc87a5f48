"""The engine contract: one conversation with a speech-to-speech engine.

The voice layer talks to every engine through these classes and never knows which one it has.
Events cross this boundary as UTF-8 JSON bytes in the GA Realtime protocol, and they are pushed,
not pulled: a conversation hands each server event to `EngineEvents.on_engine_event` from the
callback that read it, so the relay forwards a frame without a task or a queue in between.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicegate.conversation import Turn
from voicegate.errors import UpstreamClosed

__all__ = ["Engine", "EngineConfig", "EngineConversation", "EngineEvents"]


@dataclass(slots=True)
class EngineConfig:
    """What a new engine conversation is configured with (the server's and the user's choices).

    `extra` holds the session fields an operator lets clients set beyond voice, speed and turn
    detection (`instructions`, `tools`, `tool_choice`, see VOICE_CLIENT_CAN_SET).
    """

    instructions: str
    voice: str = "alloy"
    speed: float | None = None
    language: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: {"type": "server_vad"})
    tools: list[Any] | None = None
    tool_choice: Any = None


class EngineEvents(Protocol):
    """Where a conversation delivers what the engine says: the voice connection."""

    def on_engine_event(self, event: bytes | memoryview) -> None:
        """One GA server event (UTF-8 JSON). Called from the read callback: must not block."""

    def on_engine_closed(self, error: UpstreamClosed) -> None:
        """The engine ended the conversation (or its connection broke); nothing follows."""

    def on_engine_backpressure(self, paused: bool) -> None:
        """The engine stopped (True) or resumed (False) reading what it is sent."""


class EngineConversation(ABC):
    """An open conversation. Events it receives before `start` are kept and delivered first."""

    @abstractmethod
    def start(self, events: EngineEvents) -> None:
        """Deliver every event received so far, then each new one as it arrives, to `events`."""

    @abstractmethod
    def send(self, event: bytes | str) -> None:
        """Send one GA client event (JSON). Raises `UpstreamClosed` once the engine has gone."""

    def sender(self) -> Callable[[bytes], None]:
        """`send`, as the cheapest callable the conversation has (the relay calls it per frame);
        what it sends once the engine has gone is dropped, and `on_engine_closed` says so."""
        return self.send

    @abstractmethod
    def pause_reading(self) -> None:
        """Stop delivering events until `resume_reading` (the client is not reading)."""

    @abstractmethod
    def resume_reading(self) -> None:
        """Deliver events again."""

    @abstractmethod
    async def close(self) -> None:
        """Close the conversation; safe to call twice. `on_engine_closed` is not called."""


class Engine(ABC):
    """A factory of engine conversations."""

    name: str

    @abstractmethod
    async def connect(self, config: EngineConfig, history: Sequence[Turn]) -> EngineConversation:
        """Open a conversation configured with `config`, with `history` replayed into it.

        Raises `UpstreamUnavailable` after the retries, `UpstreamRejected` for a refused
        credential or an exhausted quota (never retried).
        """
