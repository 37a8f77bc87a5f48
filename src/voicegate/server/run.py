"""Running the app under uvicorn, with a drain before uvicorn closes the WebSockets."""

from __future__ import annotations

import socket

import uvicorn

from voicegate.app import create_app
from voicegate.config import Settings
from voicegate.ops.logs import configure_logging
from voicegate.voice.service import Gateway


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the gateway first on shutdown.

    Left alone, uvicorn closes open WebSockets with 1012. Draining first sends
    `gateway.draining`, saves each session record and closes with 1001, so every client
    resumes its session at once, here after a restart or on another instance.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.gateway.drain()
        await super().shutdown(sockets)


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the gateway until SIGINT/SIGTERM."""
    configure_logging(settings)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        # Our own check answers 1009 with a reason; uvicorn's bound stops anything far larger.
        ws_max_size=settings.voice_max_message_bytes * 2,
        ws_per_message_deflate=False,  # audio frames: compression costs CPU for little gain
        log_config=None,
        timeout_graceful_shutdown=max(int(settings.drain_seconds), 1),
    )
    DrainingServer(config, app.state.gateway).run()
