"""Speech-to-speech engines behind one interface: the OpenAI Realtime API and the local echo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicegate.engines.base import Engine, EngineConfig, EngineConversation, EngineEvents
from voicegate.engines.local import LocalConversation, LocalEngine
from voicegate.engines.openai import OpenAIConversation, OpenAIEngine

if TYPE_CHECKING:
    from voicegate.config import Settings

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineConversation",
    "EngineEvents",
    "LocalConversation",
    "LocalEngine",
    "OpenAIConversation",
    "OpenAIEngine",
    "engine_from_settings",
]


def engine_from_settings(settings: Settings) -> Engine:
    """The engine `VOICE_ENGINE` names (`auto`: OpenAI when `OPENAI_API_KEY` is set, else local)."""
    if settings.engine_name == "openai":
        return OpenAIEngine.from_settings(settings)
    return LocalEngine()
