"""The session record of one live connection: finished turns and preference changes noted,
and the record saved in the background, never on the relay's way.

A save is one task started when the record changes, which saves again while further changes
arrive during a save; the relay never waits for storage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from voicegate.conversation import Turn

if TYPE_CHECKING:
    from voicegate.storage import SessionRecord, StateBackend

__all__ = ["TURN_EVENTS", "RecordKeeper"]

# Server events that end a turn and carry its text: (role, field holding the text).
TURN_EVENTS = {
    b"conversation.item.input_audio_transcription.completed": ("user", "transcript"),
    b"response.output_audio_transcript.done": ("assistant", "transcript"),
    b"response.output_text.done": ("assistant", "text"),
}

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class RecordKeeper:
    """Keeps `record` up to date and saved. `spawn` runs a save in a task of the connection's."""

    __slots__ = ("_dirty", "_max_turns", "_saving", "_spawn", "_storage", "_ttl", "record")

    def __init__(
        self,
        record: SessionRecord,
        storage: StateBackend,
        *,
        ttl: int,
        max_turns: int,
        spawn: Spawn,
    ) -> None:
        self.record = record
        self._storage = storage
        self._ttl = ttl
        self._max_turns = max_turns
        self._spawn = spawn
        self._dirty = False
        self._saving: asyncio.Task[None] | None = None

    def note_turn(self, kind: bytes, event: bytes) -> None:
        """A server event of `TURN_EVENTS` finished a turn: keep its text for a replay."""
        role, name = TURN_EVENTS[kind]
        try:
            said = json.loads(event).get(name)
        except (ValueError, AttributeError):
            return
        if isinstance(said, str) and said.strip():
            conversation = self.record.conversation
            conversation.append(Turn(role, said.strip()))  # type: ignore[arg-type]
            del conversation[: max(0, len(conversation) - self._max_turns)]
            self._changed()

    def remember(self, preferences: dict[str, Any]) -> None:
        """The user chose something (voice, speed, turn detection, language, …)."""
        self.record.preferences.update(preferences)
        self._changed()

    async def save(self) -> None:
        """Write the record now (which also restarts its time to live)."""
        self._dirty = False
        self.record.touch()
        await self._storage.save_session(self.record, self._ttl)

    def stop(self) -> None:
        """No more background saves (the connection's final `save` follows)."""
        if self._saving is not None:
            self._saving.cancel()

    def _changed(self) -> None:
        self._dirty = True
        if self._saving is None or self._saving.done():
            self._saving = self._spawn(self._save_while_dirty())

    async def _save_while_dirty(self) -> None:
        while self._dirty:
            await self.save()
