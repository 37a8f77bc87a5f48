"""The picows pass-through relay baseline, in a process of its own.

    python -m bench.picows_relay UPSTREAM_URL

picows (Cython WebSocket frames over asyncio protocols) on both legs, on uvloop: a picows server
for the clients (any path, any query) and, per client, a picows client to UPSTREAM_URL. Every
data frame is forwarded inside the `on_ws_frame` callback that parsed it, with its opcode and
FIN bit as they came (continuation frames included, so fragmented messages pass through
fragmented): no task, no queue, no parsing of the payload. picows does not validate UTF-8 and
has no per-message deflate (it declines it). Frames a client sends before its upstream is open
are kept and sent, in order, once it is. When one side sends CLOSE the other is sent the same
code and both are closed; when one connection drops, so does the other.

Like the sans-I/O floor it ignores write back-pressure: it is a floor, not a product. Prints its
`ws://` URL, then serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_connect,
    ws_create_server,
)

from bench._loop import run, until_terminated
from bench._procs import API_KEY

_CLOSE = WSMsgType.CLOSE
_CONTROL = (WSMsgType.PING, WSMsgType.PONG)  # pings are answered by picows itself


def _close(transport: WSTransport | None, code: WSCloseCode, reason: bytes | None) -> None:
    """Send CLOSE with `code` (1000 for a CLOSE that had none) unless sent already; disconnect."""
    if transport is not None and not transport.is_disconnected:
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK if code is WSCloseCode.NO_INFO else code, reason)
        transport.disconnect()


class _UpstreamSide(WSListener):
    def __init__(self, client: _ClientSide) -> None:
        self.client = client

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.client.joined(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _CLOSE:
            code, reason = frame.get_close_code(), frame.get_close_message()
            _close(self.client.transport, code, reason)
            _close(transport, code, reason)
        elif kind not in _CONTROL:
            self.client.transport.send(kind, frame.get_payload_as_memoryview(), frame.fin)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        _close(self.client.transport, WSCloseCode.GOING_AWAY, None)


class _ClientSide(WSListener):
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.transport: WSTransport | None = None
        self.upstream: WSTransport | None = None
        self.early: list[tuple[WSMsgType, bytes, bool]] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self.open_upstream())

    async def open_upstream(self) -> None:
        try:
            await ws_connect(
                lambda: _UpstreamSide(self), self.upstream_url,
                extra_headers={"Authorization": f"Bearer {API_KEY}"},
            )  # fmt: skip
        except Exception as exc:  # the upstream refused or is gone: so is this client
            print(f"picows_relay: upstream: {exc!r}", file=sys.stderr, flush=True)
            _close(self.transport, WSCloseCode.BAD_GATEWAY, None)

    def joined(self, upstream: WSTransport) -> None:
        """The upstream handshake is done: send what came early, then forward as it comes."""
        client = self.transport
        if client is None or client.is_disconnected or client.is_close_frame_sent:
            _close(upstream, WSCloseCode.GOING_AWAY, None)
            return
        self.upstream = upstream
        for kind, payload, fin in self.early:
            upstream.send(kind, payload, fin)
        self.early.clear()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _CLOSE:
            code, reason = frame.get_close_code(), frame.get_close_message()
            _close(self.upstream, code, reason)
            _close(transport, code, reason)
        elif kind in _CONTROL:
            return
        elif self.upstream is not None:
            self.upstream.send(kind, frame.get_payload_as_memoryview(), frame.fin)
        else:
            self.early.append((kind, frame.get_payload_as_bytes(), frame.fin))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        _close(self.upstream, WSCloseCode.GOING_AWAY, None)


async def serve(upstream_url: str) -> None:
    def listener(request: WSUpgradeRequest) -> WSListener:
        return _ClientSide(upstream_url)

    server = await ws_create_server(listener, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"ws://127.0.0.1:{port}/ws", flush=True)
    await until_terminated()
    server.close()


def main() -> None:
    run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
