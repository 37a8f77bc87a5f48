"""HTTP routes (contract §3). The voice WebSockets are served by `server/websocket.py`."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voicegate.auth import CLIENT_SECRET_PREFIX
from voicegate.errors import AuthError, PlanUnavailable
from voicegate.ops.health import health_report
from voicegate.ops.metrics import exposition
from voicegate.voice.service import VoiceService

router = APIRouter()
dev_router = APIRouter()


def _voice(request: Request) -> VoiceService:
    service: VoiceService = request.app.state.voice
    return service


@router.get("/api/v1/voice/health")
async def health(request: Request) -> dict[str, Any]:
    service = _voice(request)
    return await health_report(service.settings, service.storage)


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    service = _voice(request)
    if service.ready and not service.draining:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "draining" if service.draining else "starting"}, 503)


@router.get("/metrics")
async def metrics() -> Response:
    return PlainTextResponse(exposition(), media_type=CONTENT_TYPE_LATEST)


@functools.cache
def _demo_page_html() -> str:
    return files("voicegate").joinpath("static", "index.html").read_text()


@router.get("/", response_class=HTMLResponse)
async def demo_page() -> HTMLResponse:
    return HTMLResponse(_demo_page_html())


class _ExpiresAfter(BaseModel):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(default=600, ge=10, le=7200)


class _ClientSecretRequest(BaseModel):
    """OpenAI's request body; its `session` (and anything else) is the server's business."""

    model_config = ConfigDict(extra="ignore")
    expires_after: _ExpiresAfter = _ExpiresAfter()


def _openai_error(
    status: int, message: str, code: str, kind: str = "invalid_request_error"
) -> JSONResponse:
    error = {"message": message, "type": kind, "param": None, "code": code}
    return JSONResponse({"error": error}, status)


# Browser apps call the route below from their own origin. It takes the bearer token alone (no
# cookie, nothing ambient), so any origin may: one that can mint holds the user's token already.
_CROSS_ORIGIN = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT = {
    **_CROSS_ORIGIN,
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


@router.options("/v1/realtime/client_secrets")
async def client_secrets_preflight() -> Response:
    """A browser's CORS preflight of `POST /v1/realtime/client_secrets`."""
    return Response(status_code=204, headers=_PREFLIGHT)


@router.post("/v1/realtime/client_secrets")
async def client_secrets(request: Request) -> JSONResponse:
    """Mint an ephemeral client secret for the user of the bearer token (OpenAI's flow)."""
    response = await _mint_client_secret(request)
    response.headers.update(_CROSS_ORIGIN)  # the app reads refusals too
    return response


async def _mint_client_secret(request: Request) -> JSONResponse:
    service = _voice(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token.startswith(CLIENT_SECRET_PREFIX):
        return _openai_error(
            401, "Send the user's token as `Authorization: Bearer`", "missing_token"
        )
    body = await request.body()
    try:
        options = (
            _ClientSecretRequest.model_validate_json(body)
            if body.strip()
            else _ClientSecretRequest()
        )
    except ValidationError:
        return _openai_error(
            400, "`expires_after.seconds` must be from 10 to 7200", "invalid_value"
        )
    authenticator = service.authenticator
    try:
        identity = await authenticator.identity_of(authenticator.tokens.verify(token))
    except AuthError as exc:
        return _openai_error(401, str(exc), "invalid_token")
    except PlanUnavailable:
        return _openai_error(503, "Plan service unavailable", "plan_unavailable", "server_error")
    allowed = service.settings.voice_allowed_plans
    if identity.plan.lower() not in allowed:
        plans = ", ".join(sorted(p.capitalize() for p in allowed))
        return _openai_error(403, f"Voice requires one of these plans: {plans}", "plan_not_allowed")
    seconds = options.expires_after.seconds
    value, expires_at = await authenticator.client_secrets.mint(identity, seconds)
    session = {"type": "realtime", "model": service.settings.openai_realtime_model}
    return JSONResponse({"value": value, "expires_at": expires_at, "session": session})


class DevTokenRequest(BaseModel):
    user_id: str = Field(default="demo-user", min_length=1, max_length=128)
    plan: str = Field(default="elite", min_length=1, max_length=64)
    email: str | None = Field(default=None, max_length=256)
    ttl: int = Field(default=3600, ge=60, le=86400)


@dev_router.post("/api/v1/dev/token")
async def dev_token(request: Request, body: DevTokenRequest | None = None) -> dict[str, Any]:
    """Development only: a token for the demo page (absent when APP_ENV=production)."""
    tokens = _voice(request).authenticator.tokens
    if not tokens.can_mint:
        raise HTTPException(404, "Not Found")
    body = body or DevTokenRequest()
    token = tokens.mint(body.user_id, body.plan, body.email, body.ttl)
    return {"token": token, "expires_in": body.ttl, "user_id": body.user_id, "plan": body.plan}
