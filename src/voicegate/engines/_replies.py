"""The local engine's answers: the conversation's items, and one response at a time that plays
committed audio back in paced chunks, so that a cancel (or the user speaking again) lands.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from dataclasses import dataclass
from typing import Any

from voicegate.engines._ga import assistant_item, dumps, response_object
from voicegate.engines._stream import EventStream

__all__ = ["Items", "Replies", "new_id"]

_AT = {"output_index": 0, "content_index": 0}  # the echo answers with one audio part


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class Items:
    """The conversation's items, and the last one (the `previous_item_id` of the next).

    Bounded, as OpenAI's context is: past `max_items` items or `max_bytes` of them (the length
    of their JSON), the oldest are dropped, each with a `conversation.item.deleted` so that a
    client's copy of the conversation stays in step (OpenAI's default `truncation: auto` drops
    the oldest messages too). A client adding items forever costs a bounded amount of memory.
    """

    def __init__(self, out: EventStream, *, max_items: int, max_bytes: int) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        self.last: str | None = None
        self._out = out
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self._max_items = max(1, max_items)
        self._max_bytes = max_bytes

    def add(self, item: dict[str, Any]) -> None:
        """A finished item: `conversation.item.added`, then `.done`."""
        item = {**item, "object": "realtime.item", "status": "completed"}
        self.put(item)
        self._out.emit("conversation.item.added", previous_item_id=self.last, item=item)
        self._out.emit("conversation.item.done", previous_item_id=self.last, item=item)
        self.last = item["id"]

    def put(self, item: dict[str, Any]) -> None:
        """Keep `item` (new, or replacing the one of its id), dropping the oldest over the
        bounds; the newest is always kept."""
        item_id = item["id"]
        self.remove(item_id)
        size = len(dumps(item))
        self.by_id[item_id] = item
        self._sizes[item_id] = size
        self._bytes += size
        while len(self.by_id) > 1 and (
            len(self.by_id) > self._max_items or self._bytes > self._max_bytes
        ):
            oldest = next(iter(self.by_id))
            self.remove(oldest)
            self._out.emit("conversation.item.deleted", item_id=oldest)

    def remove(self, item_id: str) -> bool:
        """Forget an item; False if there was none of that id."""
        if self.by_id.pop(item_id, None) is None:
            return False
        self._bytes -= self._sizes.pop(item_id)
        return True


@dataclass(slots=True)
class _Response:
    response_id: str
    item_id: str
    metadata: Any = None
    task: asyncio.Task[None] | None = None

    @property
    def ids(self) -> dict[str, str]:
        return {"response_id": self.response_id, "item_id": self.item_id}


class Replies:
    """At most one active response; `chunk_bytes` of audio per delta, `chunk_interval` apart."""

    def __init__(
        self, out: EventStream, items: Items, *, chunk_bytes: int, chunk_interval: float
    ) -> None:
        self.active: _Response | None = None
        self._out = out
        self._items = items
        self._chunk_bytes = chunk_bytes
        self._chunk_interval = chunk_interval

    def respond(self, audio: bytes, transcript: str, metadata: Any = None) -> None:
        """Start a response that plays `audio` back (none: text only) and says `transcript`."""
        response = self.active = _Response(new_id("resp"), new_id("item"), metadata=metadata)
        emit = self._out.emit
        item = assistant_item(response.item_id, "in_progress", None)
        created = response_object(response.response_id, "in_progress", metadata=metadata)
        emit("response.created", response=created)
        emit(
            "response.output_item.added",
            response_id=response.response_id,
            output_index=0,
            item=item,
        )
        emit("conversation.item.added", previous_item_id=self._items.last, item=item)
        part = {"type": "audio", "transcript": ""}  # a part's type, not an item content's
        emit("response.content_part.added", **response.ids, **_AT, part=part)
        if audio:
            response.task = asyncio.create_task(self._play(response, audio, transcript))
        else:
            self._finish(response, transcript)

    def cancel(self, reason: str) -> None:
        """End the active response as cancelled, now; its playback emits nothing more."""
        response = self.active
        if response is None:
            return
        if response.task is not None:
            response.task.cancel()
        self._out.emit("response.output_audio.done", **response.ids, **_AT)
        self._end(response, "cancelled", None, {"type": "cancelled", "reason": reason})

    def stop(self) -> None:
        """The conversation closes: playback stops without a word."""
        if self.active is not None and self.active.task is not None:
            self.active.task.cancel()
        self.active = None

    async def _play(self, response: _Response, audio: bytes, transcript: str) -> None:
        step = self._chunk_bytes
        for offset in range(0, len(audio), step):
            if offset:  # yield between chunks, so that a cancel can land
                await asyncio.sleep(self._chunk_interval)
            await self._out.reading.wait()  # a client that does not read gets nothing more
            delta = base64.b64encode(audio[offset : offset + step]).decode("ascii")
            self._out.emit("response.output_audio.delta", **response.ids, **_AT, delta=delta)
        self._finish(response, transcript)

    def _finish(self, response: _Response, transcript: str) -> None:
        emit = self._out.emit
        emit("response.output_audio.done", **response.ids, **_AT)
        emit("response.output_audio_transcript.delta", **response.ids, **_AT, delta=transcript)
        emit("response.output_audio_transcript.done", **response.ids, **_AT, transcript=transcript)
        part = {"type": "audio", "transcript": transcript}
        emit("response.content_part.done", **response.ids, **_AT, part=part)
        self._end(response, "completed", transcript, None)

    def _end(self, response: _Response, status: str, transcript: str | None, details: Any) -> None:
        item_status = "completed" if status == "completed" else "incomplete"
        item = assistant_item(response.item_id, item_status, transcript)
        emit, items = self._out.emit, self._items
        emit(
            "response.output_item.done", response_id=response.response_id, output_index=0, item=item
        )
        items.put(item)
        emit("conversation.item.done", previous_item_id=items.last, item=item)
        items.last = response.item_id
        body = response_object(response.response_id, status, [item], metadata=response.metadata)
        body["status_details"] = details
        emit("response.done", response=body)
        self.active = None
