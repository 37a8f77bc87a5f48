"""The voice WebSocket transport: picows behind uvicorn's upgrade hook.

uvicorn parses the HTTP request (bounded, see server/http.py) and hands a WebSocket upgrade to
the `ws` protocol it is configured with: `websocket_protocol` builds a picows protocol (Cython,
the handshake and framing in C) whose listener is a `WebSocketClient`. That listener is the
voice layer's `ClientTransport`: it turns the handshake into a `ClientHello`, every frame into a
call on the `VoiceConnection`, and the connection's sends into frames, without a task or a queue.

It registers itself among uvicorn's connections, so that uvicorn's graceful shutdown (every
worker's, whatever the process model) starts with `shutdown()` on it: the session drains
(`gateway.draining`, record saved, close 1001) before uvicorn waits for connections to end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows's stubs

from voicegate._frames import MessageTooLarge, Reassembler
from voicegate.voice.protocol import fit_close_reason
from voicegate.voice.state import EndReason
from voicegate.voice.transport import ClientHello

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from voicegate.voice.connection import VoiceConnection
    from voicegate.voice.service import VoiceService

__all__ = ["VOICE_PATHS", "WebSocketClient", "websocket_protocol"]

VOICE_PATHS = frozenset({"/api/v1/ws/voice", "/v1/realtime"})
KEY_SUBPROTOCOL = "openai-insecure-api-key."
_CLOSING_SECONDS = 2.0  # after a close frame, longest wait for the client before dropping it
_READ_BUFFER = 2048  # picows grows it as messages need; idle sessions stay small
_TEXT, _BINARY, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
_PONG, _CONTINUATION = WSMsgType.PONG, WSMsgType.CONTINUATION
# Quiet (voicegate logs what matters itself), and an adapter rather than a Logger: picows makes
# a child Logger for every connection from a Logger.
_log = logging.LoggerAdapter(logging.getLogger("picows.server"))
# The voice connections in uvicorn's access log, as uvicorn writes its own WebSocket lines
# (the log's formatter masks the token in the URL).
_access = logging.getLogger("uvicorn.access")


def websocket_protocol(
    config: Config, server_state: ServerState, app_state: dict[str, Any], **_: Any
) -> WSProtocol:
    """uvicorn's `ws` protocol factory: the upgrade request goes to picows."""
    service: VoiceService = app_state["voice"]
    limit = service.settings.voice_max_message_bytes
    factory = partial(_listener, service, server_state)
    return _HandedOverProtocol(
        None,
        None,
        False,
        factory,
        _log,
        True,  # an exception in a callback closes that connection (1011), not the server
        None,  # the handshake already arrived whole (uvicorn bounded it)
        False,
        20,
        20,
        WSAutoPingStrategy.PING_WHEN_IDLE,  # keepalive is the heartbeat's job
        True,  # answer pings
        limit * 2 + 1024,  # a hard bound; the limit itself is ours to answer with 1009
        None,
        _READ_BUFFER,
    )


class _HandedOverProtocol(WSProtocol):  # type: ignore[misc]  # WSProtocol is untyped (Any)
    """picows's protocol, fed once with the upgrade request uvicorn already read."""

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            buffer = self.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            self.buffer_updated(size)
            view = view[size:]


def _listener(
    service: VoiceService, server_state: ServerState, request: WSUpgradeRequest
) -> WebSocketClient | WSUpgradeResponseWithListener | None:
    """Route an upgrade: the voice paths get a client; anything else gets 404."""
    target = request.path.decode("latin-1")
    path, _, query = target.partition("?")
    # A literal `?` in a query is a client gluing `?model=…` onto a URL that had a query already
    # (Pipecat does): read it as the separator it was meant to be.
    query = query.replace("?", "&")
    if path.rstrip("/") not in VOICE_PATHS:
        return None
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    authorization = request.headers.get("Authorization", "")
    scheme, _, bearer = authorization.partition(" ")
    hello = ClientHello(
        path=path,
        query=dict(parse_qsl(query, keep_blank_values=True)),
        bearer=bearer.strip() or None if scheme.lower() == "bearer" else None,
        subprotocol_key=next(
            (p.removeprefix(KEY_SUBPROTOCOL) for p in offered if p.startswith(KEY_SUBPROTOCOL)),
            None,
        ),
    )
    client = WebSocketClient(service, server_state, hello, target)
    chosen = _subprotocol(offered)
    if chosen is None:
        return client
    response = WSUpgradeResponse.create_101_response(
        extra_headers={"Sec-WebSocket-Protocol": chosen}
    )
    return WSUpgradeResponseWithListener(response, client)


def _subprotocol(offered: list[str]) -> str | None:
    """The subprotocol to answer: `realtime` when offered; else another, for a browser fails a
    connection whose offer got no answer (the credential's own only as a last resort)."""
    offered = [p for p in offered if p]
    if not offered:
        return None
    if "realtime" in offered:
        return "realtime"
    plain = [p for p in offered if not p.startswith(KEY_SUBPROTOCOL)]
    return (plain or offered)[0]


class WebSocketClient(WSListener):
    """One client's WebSocket, as the voice layer sees it (`ClientTransport`)."""

    def __init__(
        self, service: VoiceService, server_state: ServerState, hello: ClientHello, target: str
    ) -> None:
        super().__init__()
        self._target = target
        self._service = service
        # uvicorn's set of live connections: its graceful shutdown calls `shutdown()` on each.
        self._connections: set[Any] = server_state.connections
        self._hello = hello
        self._limit = service.settings.voice_max_message_bytes
        self._fragments = Reassembler(self._limit)
        self._ws: WSTransport | None = None
        self._client_closed = False
        self._gone = False
        self.connection: VoiceConnection | None = None

    # -- picows callbacks ---------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._ws = transport
        peer = transport.underlying_transport.get_extra_info("peername") or ("-", 0)
        _access.info('%s:%d - "WebSocket %s" [accepted]', peer[0], peer[1], self._target)
        high = self._service.settings.voice_client_buffer_bytes
        transport.underlying_transport.set_write_buffer_limits(high=high, low=high // 4)
        self._connections.add(self)
        self.connection = self._service.open(self, self._hello)
        self._on_message = self.connection.on_client_message

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        connection = self.connection
        assert connection is not None
        connection.seen = True
        kind = frame.msg_type
        if transport.is_close_frame_sent and kind != _CLOSE:
            return  # the session is over: what the client sent before its close frame is moot
        if kind == _TEXT and frame.fin:  # the hot path: one message, one frame
            payload = frame.get_payload_as_bytes()
            if len(payload) > self._limit:
                connection.on_message_too_large(self._limit)
            else:
                self._on_message(payload)
        elif kind == _CLOSE:
            self._client_closed = True
            code = frame.get_close_code()
            if code == WSCloseCode.NO_INFO:
                transport.send(_CLOSE, b"")
            else:
                transport.send_close(code)
            transport.disconnect()
            connection.on_client_closed()
        elif kind == _BINARY and frame.fin:
            if len(frame.get_payload_as_memoryview()) > self._limit:
                connection.on_message_too_large(self._limit)
            else:
                connection.on_client_binary()
        elif kind in (_TEXT, _BINARY, _CONTINUATION):
            try:
                message = self._fragments.add(frame)
            except MessageTooLarge:
                connection.on_message_too_large(self._limit)
                return
            if message is None:
                pass
            elif self._fragments.is_text:
                connection.on_client_message(message)
            else:
                connection.on_client_binary()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._gone = True
        self._connections.discard(self)
        if self.connection is not None and not self._client_closed:
            self.connection.on_transport_lost()

    def pause_writing(self) -> None:
        if self.connection is not None:
            self.connection.on_client_backpressure(True)

    def resume_writing(self) -> None:
        if self.connection is not None:
            self.connection.on_client_backpressure(False)

    # -- uvicorn's graceful shutdown ----------------------------------------------------------

    def shutdown(self) -> None:
        """The server is stopping: the session drains (`gateway.draining`, close 1001)."""
        self._service.draining = True
        if self.connection is not None:
            self.connection.end(EndReason.DRAINING)

    # -- ClientTransport ----------------------------------------------------------------------

    def send(self, data: bytes | memoryview) -> None:
        if self._ws is not None:  # picows drops what is sent after the close frame
            self._ws.send(_TEXT, data)

    def sender(self) -> Callable[[bytes | memoryview], None]:
        assert self._ws is not None
        return functools.partial(self._ws.send, _TEXT)

    def close(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws is None or self._gone:
            return
        if not ws.is_close_frame_sent:
            ws.send_close(WSCloseCode(code), fit_close_reason(reason).encode())
        # The closing handshake: read on (reading may be paused, during admission say) and
        # close the socket when the client's close frame comes back (`on_ws_frame`), not now.
        # Closed over frames still unread or arriving, the socket would be reset, and a reset
        # can destroy our close frame before the client reads it (it sees 1006, not the code).
        underlying = ws.underlying_transport
        underlying.resume_reading()
        # A client that does not answer is dropped.
        asyncio.get_running_loop().call_later(_CLOSING_SECONDS, underlying.abort)

    def pause_reading(self) -> None:
        if not self._gone and self._ws is not None:
            self._ws.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._gone and self._ws is not None:
            self._ws.underlying_transport.resume_reading()

    def ping(self) -> None:
        if not self._gone and self._ws is not None:
            self._ws.send_ping()
