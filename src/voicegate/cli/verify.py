"""`voicegate verify`: the post-deployment checklist, run against a live gateway (contract §6).

    Health         GET /api/v1/voice/health: healthy, Redis in use (not the memory fallback),
                   feature on, engine named, Redis latency
    Ready          GET /readyz: 200, new sessions are admitted
    Voice session  a real session: ~1 s of PCM16 in, audio back (byte for byte from the local
                   engine), time to first audio
    Resume         reconnect with the session id: `resumed: true`, the same session
    Rate limit     (--rate-limit) sessions of a throwaway user until the 4029 refusal

One line per check, ✅ or ❌ with what was measured, then `N passed, M failed`; `run` returns 0
when every check passed, else 1. With --jwt-secret the tokens are minted for throwaway users
(`verify-<random>`), so the checks never spend a real user's quota; --token is used as given.
Neither is ever printed: every line goes through `mask_text` with both as known secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import socket
import ssl
import struct
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

import httpx
from jwt.warnings import InsecureKeyLengthWarning
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voicegate._redact import mask_text, mask_url
from voicegate.auth.tokens import mint_token

__all__ = ["base_url", "run"]

OK, FAIL = "✅", "❌"
RATE = 24_000  # PCM16 mono samples per second, as the Realtime API expects
# 1 s of a 1 kHz square wave: loud enough that an engine's voice activity detection hears speech.
PROBE_AUDIO = (struct.pack("<h", 8000) * 12 + struct.pack("<h", -8000) * 12) * (RATE // 24)
CHUNK_BYTES = 4_800  # 100 ms per append, as a browser client sends it
DEFAULT_SESSIONS_PER_WINDOW = 5  # VOICE_RATE_LIMIT's default, when a refusal names no figure
MAX_RATE_PROBES = 50  # sessions spent at most looking for the refusal
_RATE_FIGURES = re.compile(r"\((\d+) sessions?/(\w+) max\)")


class _Failed(Exception):
    """A check failed; the message says what was measured."""


class _Unreachable(_Failed):
    """The base URL does not answer at all: every other check would only repeat it."""


class _Refused(_Failed):
    """Admission closed the WebSocket before `gateway.session`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"refused with close {code}: {reason or '(no reason)'}")
        self.code, self.reason = code, reason


def base_url(text: str) -> str:
    """BASE_URL as argparse takes it: http(s)://host[:port][/prefix], no trailing slash."""
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - reading it raises ValueError when the port is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{mask_url(text)!r} is not an http(s):// URL with a host")
    return text.strip().rstrip("/")


def _why(exc: BaseException) -> str:
    """The root cause of a connection failure, in an operator's words."""
    cause: BaseException | None = exc
    while cause is not None:  # httpx and websockets wrap the socket error, often twice
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the gateway running, on this host and port?)"
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed ({cause.strerror})"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({cause.verify_message})"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _judge_health(data: dict[str, Any]) -> str:
    """The health line's text when the report passes; `_Failed` saying why when not."""
    status, engine, redis = data.get("status"), data.get("engine"), data.get("redis")
    if not isinstance(redis, dict):
        raise _Failed(f"{status} — the report has no `redis` object")
    if status == "disabled" or not data.get("feature_enabled"):
        raise _Failed(f"{status} — the voice feature is off (ENABLE_VOICE_REALTIME=false)")
    if not redis.get("redis_enabled"):
        raise _Failed(f"{status} — Redis disabled (REDIS_ENABLED=false): sessions and rate "
                      "limits live in one process's memory")  # fmt: skip
    if not redis.get("redis_available") or redis.get("using_fallback") is not False:
        where = f" at {mask_url(str(redis['redis_url']))}" if redis.get("redis_url") else ""
        fallback = json.dumps(redis.get("using_fallback"))
        raise _Failed(f"{status} — Redis unavailable{where}, serving from memory (using_fallback: "
                      f"{fallback}); run `voicegate doctor` on the gateway host")  # fmt: skip
    if status != "healthy" or not engine:
        raise _Failed(f"status {status}, engine {engine}")
    alerts = [f"{a.get('name')} {a.get('value')} > {a.get('threshold')}"
              for a in data.get("alerts") or () if isinstance(a, dict)]  # fmt: skip
    crossed = f"; alerts: {', '.join(alerts)}" if alerts else ""
    return (f"healthy (engine {engine}, Redis {redis.get('redis_version')}, latency "
            f"{redis.get('latency_ms')} ms, version {data.get('version')}{crossed})")  # fmt: skip


class _Verifier:
    """Runs the checks in order and prints one masked line for each."""

    def __init__(self, args: argparse.Namespace, out: TextIO, http: httpx.AsyncClient) -> None:
        self.base: str = args.base_url
        self.timeout: float = args.timeout
        self.token: str | None = args.token
        self.secret: str | None = args.jwt_secret
        self.plan: str = args.plan
        self.claims: tuple[str | None, str | None] = (args.jwt_audience, args.jwt_issuer)
        self.out, self.http = out, http
        self.secrets = tuple(s for s in (self.token, self.secret) if s)
        self.passed = self.failed = 0
        self.user_token = self._token_for_new_user()
        self.session_id: str | None = None
        scheme, rest = self.base.split("://", 1)
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/v1/ws/voice"

    def _token_for_new_user(self) -> str:
        if self.secret is None:
            assert self.token is not None  # argparse requires one of the two
            return self.token
        audience, issuer = self.claims
        with warnings.catch_warnings():  # a short secret is the server's choice; warn once, below
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            user = f"verify-{secrets.token_hex(6)}"
            return mint_token(self.secret, user, self.plan, None, 600, audience, issuer)

    async def check(self, name: str, probe: Callable[[], Awaitable[str]], bounded: bool) -> None:
        """Run one probe and print its line; `_Unreachable` propagates.

        A `bounded` probe gets --timeout in all; the others bound each of their steps.
        """
        unreachable = False
        try:
            async with asyncio.timeout(self.timeout if bounded else None):
                mark, detail = OK, await probe()
        except _Failed as failed:
            mark, detail, unreachable = FAIL, str(failed), isinstance(failed, _Unreachable)
        except TimeoutError:
            mark, detail = FAIL, f"no answer within {self.timeout:g} s"
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # The gateway answered something the contract does not describe (not JSON, …).
            mark, detail = FAIL, f"unexpected answer ({type(exc).__name__}: {exc})"
        self.passed, self.failed = self.passed + (mark == OK), self.failed + (mark == FAIL)
        print(mask_text(f"{mark} {name}: {detail}", self.secrets), file=self.out, flush=True)
        if unreachable:
            raise _Unreachable(detail)

    async def _get(self, path: str) -> httpx.Response:
        try:
            return await self.http.get(self.base + path)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Unreachable(f"cannot reach {mask_url(self.base)}: {_why(exc)}") from None
        except httpx.HTTPError as exc:
            raise _Failed(f"GET {path} failed: {_why(exc)}") from None

    async def health(self) -> str:
        response = await self._get("/api/v1/voice/health")
        if response.status_code != 200:
            raise _Failed(f"GET /api/v1/voice/health answered {response.status_code} "
                          "(is BASE_URL the gateway?)")  # fmt: skip
        data = response.json()
        return _judge_health(data if isinstance(data, dict) else {})

    async def ready(self) -> str:
        response = await self._get("/readyz")
        json_body = response.headers.get("content-type", "").startswith("application/json")
        state = response.json().get("status") if json_body else response.reason_phrase
        if response.status_code != 200:
            raise _Failed(f"/readyz {response.status_code} ({state}): new sessions are refused")
        return f"/readyz {response.status_code} ({state})"

    async def _open(
        self, token: str, session_id: str | None = None
    ) -> tuple[ClientConnection, dict[str, Any]]:
        """A voice connection and its `gateway.session` message, or `_Failed` saying why not."""
        query = {"token": token, **({"session_id": session_id} if session_id else {})}
        try:
            ws = await connect(f"{self.ws_url}?{urlencode(query)}", open_timeout=self.timeout)
        except InvalidStatus as exc:
            code = exc.response.status_code
            raise _Failed(f"WebSocket upgrade refused with HTTP {code}") from None
        except (OSError, InvalidHandshake) as exc:
            raise _Failed(f"cannot open the WebSocket: {_why(exc)}") from None
        try:
            first = json.loads(await ws.recv())
        except ConnectionClosed as closed:
            frame = closed.rcvd
            raise _Refused(frame.code if frame else 1006, frame.reason if frame else "") from None
        if not isinstance(first, dict) or first.get("type") != "gateway.session":
            await ws.close()
            raise _Failed(f"first message was not gateway.session: {str(first)[:80]}")
        return ws, first

    async def voice(self) -> str:
        ws, first = await self._open(self.user_token)
        engine, sent = first.get("engine"), PROBE_AUDIO
        try:
            for offset in range(0, len(sent), CHUNK_BYTES):
                chunk = base64.b64encode(sent[offset : offset + CHUNK_BYTES]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await ws.send('{"type": "input_audio_buffer.commit"}')
            committed = time.perf_counter()
            if engine != "local":  # with server VAD, OpenAI answers a manual commit only if asked
                await ws.send('{"type": "response.create"}')
            status, received, first_audio, error = await self._response(ws)
        except ConnectionClosed as closed:
            said = f"{closed.rcvd.code} {closed.rcvd.reason}" if closed.rcvd else "no close frame"
            raise _Failed(f"connection closed during the response ({said})") from None
        finally:
            await ws.close()
        self.session_id = str(first.get("session_id"))
        if status != "completed" or first_audio is None:
            said = f" (error: {error})" if error else ""
            raise _Failed(
                f"response.done with status {status}{said}, {len(received)} bytes of audio"
            )
        ttfa = f"first audio {(first_audio - committed) * 1000:.0f} ms after commit"
        if engine != "local":
            return f"{len(received) / 2 / RATE:.1f} s of audio back from {engine}, {ttfa}"
        if received != sent:
            raise _Failed(f"the local engine's echo differs: sent {len(sent)} bytes, "
                          f"got {len(received)} back")  # fmt: skip
        return f"{len(sent)} bytes (1.0 s) echoed byte for byte by the local engine, {ttfa}"

    @staticmethod
    async def _response(ws: ClientConnection) -> tuple[str, bytes, float | None, str]:
        """Read up to `response.done`: status, audio, when audio came first, the last error."""
        received, first_audio, error = bytearray(), None, ""
        while True:
            event = json.loads(await ws.recv())
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "response.output_audio.delta":
                first_audio = first_audio or time.perf_counter()
                received += base64.b64decode(event.get("delta", ""))
            elif kind == "error":
                error = str(event.get("error", {}).get("message", ""))
            elif kind == "response.done":
                status = str(event.get("response", {}).get("status"))
                return status, bytes(received), first_audio, error

    async def resume(self) -> str:
        if self.session_id is None:
            raise _Failed("not checked: no voice session to resume")
        ws, first = await self._open(self.user_token, self.session_id)
        await ws.close()
        if first.get("resumed") is not True:
            raise _Failed(f"resumed: {json.dumps(first.get('resumed'))}, expected true")
        if first.get("session_id") != self.session_id:
            raise _Failed("resumed: true but with a different session id")
        return "resumed: true, same session id"

    async def rate_limit(self) -> str:
        if self.secret is None:
            raise _Failed("not checked: --rate-limit needs --jwt-secret, to spend a throwaway "
                          "user's sessions rather than this token's user's quota")  # fmt: skip
        token, admitted, busy = self._token_for_new_user(), 0, 0
        while admitted <= MAX_RATE_PROBES:
            try:
                async with asyncio.timeout(self.timeout):
                    ws, _ = await self._open(token)
            except _Refused as refused:
                if refused.code != 4029:
                    raise _Failed(f"session {admitted + 1} {refused}") from None
                if "concurrent" in refused.reason and busy < 50:
                    # The last session's lease is given back just after its close: not a
                    # refusal by the rate limit, and not counted by it. Try again shortly.
                    busy += 1
                    await asyncio.sleep(0.1)
                    continue
                figures = _RATE_FIGURES.search(refused.reason)
                limit = int(figures[1]) if figures else DEFAULT_SESSIONS_PER_WINDOW
                if admitted != limit:
                    raise _Failed(f"session {admitted + 1} refused, expected session "
                                  f"{limit + 1}: {refused.reason}") from None  # fmt: skip
                return f"sessions 1–{admitted} admitted, session {admitted + 1} refused with " \
                       f"4029 \"{refused.reason}\""  # fmt: skip
            await ws.close()
            admitted += 1
        raise _Failed(f"{admitted} sessions admitted and none refused")


async def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the checklist against `args.base_url`; 0 when every check passed, else 1."""
    async with httpx.AsyncClient(timeout=args.timeout) as http:
        verifier = _Verifier(args, out, http)
        print(f"Deployment checks for {mask_url(verifier.base)}", file=out)
        if verifier.secret is not None and len(verifier.secret.encode()) < 32:
            print("⚠️ the JWT secret is shorter than 32 bytes (RFC 7518 §3.2)", file=out)
        checks: list[tuple[str, Callable[[], Awaitable[str]], bool]] = [
            ("Health", verifier.health, True), ("Ready", verifier.ready, True),
            ("Voice session", verifier.voice, True), ("Resume", verifier.resume, True),
        ]  # fmt: skip
        if args.rate_limit:  # up to MAX_RATE_PROBES sessions: each one is bounded instead
            checks.append(("Rate limit", verifier.rate_limit, False))
        try:
            for name, probe, bounded in checks:
                await verifier.check(name, probe, bounded)
        except _Unreachable:
            print("The other checks were not run: the gateway does not answer.", file=out)
    print(f"\n{verifier.passed} passed, {verifier.failed} failed", file=out, flush=True)
    return 0 if verifier.failed == 0 else 1
