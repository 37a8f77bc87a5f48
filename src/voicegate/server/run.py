"""`voicegate serve`: uvicorn with voicegate's protocols, one process or several workers.

One port serves everything: uvicorn accepts the connections (TLS included) and parses each
request head with the bounds of `server/http.py`; HTTP requests go to the FastAPI app, voice
WebSocket upgrades to picows (`server/websocket.py`). With `--workers N`, uvicorn's supervisor
runs N processes on one listening socket; each process has its own heartbeat, and admission is
exact across them because it is decided in Redis.
"""

from __future__ import annotations

import os
import tempfile

import uvicorn
from fastapi import FastAPI

from voicegate.app import create_app
from voicegate.config import Settings, load_settings
from voicegate.ops.logs import configure_logging
from voicegate.ops.metrics import MULTIPROCESS_DIR
from voicegate.server.http import BoundedHttpProtocol
from voicegate.server.websocket import websocket_protocol

__all__ = ["serve", "uvicorn_config", "worker_app"]


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn's factory): settings read and logging set up in
    the process itself."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)


def uvicorn_config(
    settings: Settings,
    host: str,
    port: int,
    *,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    app: FastAPI | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration for voicegate (`app` defaults to one built from `settings`)."""
    return uvicorn.Config(
        "voicegate.server.run:worker_app" if workers > 1 else (app or create_app(settings)),
        factory=workers > 1,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=BoundedHttpProtocol,
        ws=websocket_protocol,  # type: ignore[arg-type]  # a factory of picows protocols
        lifespan="on",
        log_config=None,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        # Voice connections drain first (1001 within a couple of seconds each); this bounds the
        # wait for whatever is left.
        timeout_graceful_shutdown=max(int(settings.drain_seconds), 1) + 2,
    )


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    """Run the gateway until SIGINT/SIGTERM."""
    configure_logging(settings)
    config = uvicorn_config(
        settings, host, port, workers=workers, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    from uvicorn.supervisors import Multiprocess

    # Every worker writes its figures where the others' are, and /metrics adds them up.
    with tempfile.TemporaryDirectory(prefix="voicegate-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR] = directory  # inherited by the workers it spawns
        Multiprocess(config, sockets=[config.bind_socket()]).run()
