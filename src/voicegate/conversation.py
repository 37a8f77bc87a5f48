"""What a voice conversation is made of, shared by storage, engines and the voice layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One finished utterance of the conversation, kept as text for replay after a resume."""

    role: Literal["user", "assistant"]
    text: str
