"""Two stripped-down relays that show what the relay's software stack costs by itself.

    python -m bench.floor_relays UPSTREAM_URL fastapi|asgi|sansio

None checks anything: they are floors, not products. `fastapi` is a FastAPI WebSocket endpoint
on uvicorn configured like the gateway (websockets-sansio, no per-message deflate), forwarding
text messages as they come through a `websockets` asyncio client: what the gateway's relay would
cost with no code of its own. `asgi` is the same as a bare ASGI app (no FastAPI, no Starlette).
`sansio` drops the framework layers too:
one asyncio protocol per side, websockets' sans-I/O protocol objects, and every message
forwarded inside the `data_received` callback that read it (no task, no queue, no ASGI).
Prints its `ws://` URL, then serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from fastapi import FastAPI, WebSocket
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from bench._loop import run, until_terminated
from bench._procs import API_KEY, free_port

# -- asgi: a bare ASGI app ------------------------------------------------------------------


def asgi_app(upstream_url: str) -> Any:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with connect(upstream_url, additional_headers=headers, compression=None) as up:

            async def client_to_upstream() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    await up.send(message["text"])

            async def upstream_to_client() -> None:
                async for text in up:
                    await send({"type": "websocket.send", "text": text})

            tasks = [
                asyncio.create_task(client_to_upstream()),
                asyncio.create_task(upstream_to_client()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            except ConnectionClosed:
                pass
            finally:
                for task in tasks:
                    task.cancel()

    return app


# -- fastapi: the same through FastAPI/Starlette's WebSocket --------------------------------


def fastapi_app(upstream_url: str) -> Any:
    from websockets.asyncio.client import connect

    app = FastAPI()

    @app.websocket("/ws")
    async def relay(websocket: WebSocket) -> None:
        await websocket.accept()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with connect(upstream_url, additional_headers=headers, compression=None) as up:

            async def client_to_upstream() -> None:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    await up.send(message["text"])

            async def upstream_to_client() -> None:
                async for text in up:
                    await websocket.send_text(text)

            tasks = [
                asyncio.create_task(client_to_upstream()),
                asyncio.create_task(upstream_to_client()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()

    return app


# -- sansio: callbacks only -----------------------------------------------------------------


class _Side(asyncio.Protocol):
    """One TCP connection driven by a websockets sans-I/O protocol; text goes to `peer`."""

    ws: ServerProtocol | ClientProtocol
    transport: asyncio.Transport
    peer: _Side | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            else:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            self.handle(event)
        self.flush()

    def handle(self, event: Any) -> None:
        if getattr(event, "opcode", None) is Opcode.TEXT and self.peer is not None:
            self.peer.ws.send_text(event.data)
            self.peer.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.transport.close()


class _ClientSide(_Side):
    def __init__(self, upstream_url: str) -> None:
        self.ws = ServerProtocol()
        self.upstream_url = upstream_url
        self.early: list[bytes] = []

    def handle(self, event: Any) -> None:
        if isinstance(event, Request):
            self.ws.send_response(self.ws.accept(event))
            asyncio.get_running_loop().create_task(self.open_upstream())
        elif getattr(event, "opcode", None) is Opcode.TEXT and self.peer is None:
            self.early.append(event.data)
        else:
            super().handle(event)

    async def open_upstream(self) -> None:
        uri = parse_uri(self.upstream_url)
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _UpstreamSide(self, uri), uri.host, uri.port)


class _UpstreamSide(_Side):
    def __init__(self, client: _ClientSide, uri: Any) -> None:
        self.ws = ClientProtocol(uri)
        self.client = client

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        request = self.ws.connect()
        request.headers["Authorization"] = f"Bearer {API_KEY}"
        self.ws.send_request(request)
        self.flush()

    def handle(self, event: Any) -> None:
        if isinstance(event, Response):  # handshake done: join the two sides
            self.peer, self.client.peer = self.client, self
            for data in self.client.early:
                self.ws.send_text(data)
            self.client.early.clear()
        else:
            super().handle(event)


async def serve_sansio(upstream_url: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _ClientSide(upstream_url), "127.0.0.1", port)
    print(f"ws://127.0.0.1:{port}/ws", flush=True)
    await until_terminated()
    server.close()


def main() -> None:
    upstream_url, mode = sys.argv[1], sys.argv[2]
    port = free_port()
    if mode == "sansio":
        run(serve_sansio(upstream_url, port))
        return
    import uvicorn

    print(f"ws://127.0.0.1:{port}/ws", flush=True)
    app = asgi_app(upstream_url) if mode == "asgi" else fastapi_app(upstream_url)
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning",
        ws="websockets-sansio", ws_per_message_deflate=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
