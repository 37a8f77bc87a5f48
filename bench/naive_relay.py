"""The "naive relay" baseline of benchmarks.md, in a process of its own.

    python -m bench.naive_relay UPSTREAM_URL [WS_IMPL]

A FastAPI WebSocket endpoint, served by uvicorn with its defaults, that parses every client
message with `json.loads`, re-encodes it for the upstream, and forwards both ways through a
`websockets` client, parsing (and re-encoding) every upstream message too. This is the relay
most people write first; the gateway's relay is measured against it. Prints its `ws://` URL,
then serves until SIGTERM. WS_IMPL picks another uvicorn WebSocket implementation (`ws=`),
for comparisons; the default is uvicorn's own default.
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench._procs import API_KEY, free_port


def create_app(upstream_url: str) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def relay(websocket: WebSocket) -> None:
        await websocket.accept()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with connect(upstream_url, additional_headers=headers) as upstream:

            async def client_to_upstream() -> None:
                while True:
                    event = json.loads(await websocket.receive_text())
                    await upstream.send(json.dumps(event))

            async def upstream_to_client() -> None:
                async for message in upstream:
                    event = json.loads(message)
                    await websocket.send_text(json.dumps(event))

            tasks = [
                asyncio.create_task(client_to_upstream()),
                asyncio.create_task(upstream_to_client()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for task in tasks:
                    if task.done() and not task.cancelled():
                        error = task.exception()
                        if error and not isinstance(error, WebSocketDisconnect | ConnectionClosed):
                            raise error

    return app


def main() -> None:
    port = free_port()
    print(f"ws://127.0.0.1:{port}/ws", flush=True)
    ws = sys.argv[2] if len(sys.argv) > 2 else "auto"
    app = create_app(sys.argv[1])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws=ws)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
