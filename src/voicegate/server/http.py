"""uvicorn's httptools protocol, with bounds on every request head.

uvicorn reads a request head for as long as the client sends it, of any size, and waits for the
first byte of a connection forever: a client with no credentials could hold sockets and grow
the server's memory without bound. Here every head (each request of a keep-alive connection,
and the WebSocket handshake) must arrive within HTTP_HEAD_TIMEOUT_SECONDS, within
HTTP_MAX_HEADER_BYTES and HTTP_MAX_HEADERS; otherwise the client gets 408, 414 or 431 at once
and the connection is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpProtocol", "HeadLimits"]

_LINGER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """Bounds on one request head (the app's lifespan state carries the configured ones)."""

    max_bytes: int = 32 * 1024
    max_headers: int = 100
    timeout: float = 10.0


class BoundedHttpProtocol(HttpToolsProtocol):
    """An httptools protocol that refuses oversized and unfinished request heads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.app_state.get("head_limits")
        self._limits: HeadLimits = limits if isinstance(limits, HeadLimits) else HeadLimits()
        self._head_bytes = 0  # bytes received while a head is unfinished
        self._parsed_bytes = 0  # the size of the head's parts the parser has delivered
        self._headers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- the connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is a head that never arrives

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        in_head = self._timer is not None  # armed from a head's first byte to its end
        super().data_received(data)
        # Counted here, not in the callbacks: httptools keeps an unfinished header line to itself
        # until its end arrives, however long it grows. A chunk that also ended the head (and
        # carried some body) is not held against it.
        if in_head and self._timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_bytes:
                too_long = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                self._refuse(too_long if self._headers else HTTPStatus.REQUEST_URI_TOO_LONG)

    def handle_websocket_upgrade(self) -> None:
        if not self._refused:
            self._disarm()
            super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._parsed_bytes = self._headers = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._parsed_bytes += len(url)
        if self._parsed_bytes > self._limits.max_bytes:
            self._refuse(HTTPStatus.REQUEST_URI_TOO_LONG)
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_bytes += len(name) + len(value) + 4
        self._headers += 1
        limits = self._limits
        if self._parsed_bytes > limits.max_bytes or self._headers > limits.max_headers:
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    # -- bounds -------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self._limits.timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        self._refuse(HTTPStatus.REQUEST_TIMEOUT)

    def _refuse(self, status: HTTPStatus) -> None:
        """Answer `status` now and close; the rest of what the client sends is ignored."""
        if self._refused:
            return
        self._refused = True
        self._disarm()
        body = f"{status.value} {status.phrase}\n".encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(head.encode() + body)
        if transport.can_write_eof():
            # Closing with unread input makes the kernel send a reset, which can destroy the
            # answer before the client reads it: end our side, discard what still comes for a
            # moment, then close.
            transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()
