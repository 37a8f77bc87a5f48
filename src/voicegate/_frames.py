"""Fragmented WebSocket messages put back together, for the picows callbacks on both sides.

picows delivers frames, not messages. Browsers and the Realtime API send every message as one
frame, so the relay's hot path never comes here; a peer that fragments still gets its message
through, up to a size limit.
"""

from __future__ import annotations

from picows import WSFrame, WSMsgType

__all__ = ["MessageTooLarge", "Reassembler"]

_CONTINUATION = WSMsgType.CONTINUATION


class MessageTooLarge(Exception):
    """The fragments of one message add up to more than the limit."""


class Reassembler:
    """Collects the fragments of one message at a time.

    `add` takes any data frame that is not a whole message by itself (a first fragment, a
    continuation) and returns the message once its last fragment arrived, else None.
    `is_text` tells what the first fragment said the message is.
    """

    __slots__ = ("_parts", "is_text", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: bytearray | None = None
        self.is_text = True

    def add(self, frame: WSFrame) -> bytes | None:
        if frame.msg_type != _CONTINUATION:  # a first fragment starts a new message
            self._parts = bytearray()
            self.is_text = frame.msg_type == WSMsgType.TEXT
        elif self._parts is None:  # a continuation of nothing: a peer's mistake, dropped
            return None
        parts = self._parts
        parts += frame.get_payload_as_memoryview()
        if len(parts) > self.limit:
            self._parts = None
            raise MessageTooLarge(f"message over {self.limit} bytes")
        if not frame.fin:
            return None
        self._parts = None
        return bytes(parts)
