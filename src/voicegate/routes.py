"""HTTP and WebSocket routes (contract §3 and §4)."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from voicegate.errors import AdmissionError
from voicegate.ops.health import health_report
from voicegate.voice.connection import VoiceConnection
from voicegate.voice.protocol import fit_close_reason
from voicegate.voice.service import Gateway

router = APIRouter()
dev_router = APIRouter()


def _gateway(connection: Request | WebSocket) -> Gateway:
    gateway: Gateway = connection.app.state.gateway
    return gateway


@router.get("/api/v1/voice/health")
async def health(request: Request) -> dict[str, Any]:
    gateway = _gateway(request)
    return await health_report(gateway.settings, gateway.storage)


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    gateway = _gateway(request)
    if gateway.ready and not gateway.draining:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "draining" if gateway.draining else "starting"}, 503)


@router.get("/metrics")
async def metrics() -> Response:
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@functools.cache
def _demo_page_html() -> str:
    return files("voicegate").joinpath("static", "index.html").read_text()


@router.get("/", response_class=HTMLResponse)
async def demo_page() -> HTMLResponse:
    return HTMLResponse(_demo_page_html())


@router.websocket("/api/v1/ws/voice")
async def voice(websocket: WebSocket) -> None:
    gateway = _gateway(websocket)
    query = websocket.query_params
    # Accept first: a close code and reason can only reach the client on an open WebSocket.
    await websocket.accept()
    try:
        admitted = await gateway.admit(query.get("token"), query.get("session_id") or None)
    except AdmissionError as refusal:
        await websocket.close(refusal.code, fit_close_reason(refusal.reason))
        return
    await VoiceConnection(gateway, websocket, admitted, beta=query.get("events") == "beta").run()


class DevTokenRequest(BaseModel):
    user_id: str = Field(default="demo-user", min_length=1, max_length=128)
    plan: str = Field(default="elite", min_length=1, max_length=64)
    email: str | None = Field(default=None, max_length=256)
    ttl: int = Field(default=3600, ge=60, le=86400)


@dev_router.post("/api/v1/dev/token")
async def dev_token(request: Request, body: DevTokenRequest | None = None) -> dict[str, Any]:
    """Development only: a token for the demo page (absent when APP_ENV=production)."""
    gateway = _gateway(request)
    if not gateway.verifier.can_mint:
        raise HTTPException(404, "Not Found")
    body = body or DevTokenRequest()
    token = gateway.verifier.mint(body.user_id, body.plan, body.email, body.ttl)
    return {"token": token, "expires_in": body.ttl, "user_id": body.user_id, "plan": body.plan}
