"""`voicegate verify`: the post-deployment checklist, run against a live gateway (contract §6).

    Health         GET /api/v1/voice/health: healthy, Redis in use (not the memory fallback),
                   feature on, engine named, Redis latency
    Ready          GET /readyz: 200, new sessions are admitted
    Voice session  a real session: ~1 s of PCM16 in, audio back (byte for byte from the local
                   engine), time to first audio
    Resume         reconnect with the session id: `resumed: true`, the same session
    Rate limit     (--rate-limit) sessions of a throwaway user until the 4029 refusal
    Long session   (--long [MINUTES], 11 without a figure) one session held that long, an audio
                   turn every --turn-every s, each checked; no session.timeout (_long_session.py)
    Redis ops/s,   (--monitoring) the guide's 24-hour checks, judged on the gateway's health
    memory,        and /metrics read over --monitoring-seconds (_monitoring.py)
    latency, errors

One line per check, ✅ or ❌ with what was measured, then `N passed, M failed`; `run` returns 0
when every check passed, else 1. With --jwt-secret the tokens are minted for throwaway users
(`verify-<random>`), so the checks never spend a real user's quota; --token is used as given.
Neither is ever printed: every line goes through `mask_text` with both as known secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import secrets
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
from jwt.warnings import InsecureKeyLengthWarning

from voicegate._redact import mask_text, mask_url
from voicegate.auth.tokens import mint_token
from voicegate.cli._gateway import (
    FAIL,
    OK,
    PROBE_AUDIO,
    RATE,
    Failed,
    GatewayClient,
    Refused,
    Unreachable,
    audio_turn,
)
from voicegate.cli._long_session import LongSession
from voicegate.cli._monitoring import Judge, collect
from voicegate.cli._progress import Progress

__all__ = ["base_url", "run"]

DEFAULT_SESSIONS_PER_WINDOW = 5  # VOICE_RATE_LIMIT's default, when a refusal names no figure
MAX_RATE_PROBES = 50  # sessions spent at most looking for the refusal
_RATE_FIGURES = re.compile(r"\((\d+) sessions?/(\w+) max\)")


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


def _judge_health(data: dict[str, Any]) -> str:
    """The health line's text when the report passes; `Failed` saying why when not."""
    status, engine, redis = data.get("status"), data.get("engine"), data.get("redis")
    if not isinstance(redis, dict):
        raise Failed(f"{status} — the report has no `redis` object")
    if status == "disabled" or not data.get("feature_enabled"):
        raise Failed(f"{status} — the voice feature is off (ENABLE_VOICE_REALTIME=false)")
    if not redis.get("redis_enabled"):
        raise Failed(
            f"{status} — Redis disabled (REDIS_ENABLED=false): sessions and rate "
            "limits live in one process's memory"
        )
    if not redis.get("redis_available") or redis.get("using_fallback") is not False:
        where = f" at {mask_url(str(redis['redis_url']))}" if redis.get("redis_url") else ""
        fallback = json.dumps(redis.get("using_fallback"))
        raise Failed(
            f"{status} — Redis unavailable{where}, serving from memory (using_fallback: "
            f"{fallback}); run `voicegate doctor` on the gateway host"
        )
    if status != "healthy" or not engine:
        raise Failed(f"status {status}, engine {engine}")
    alerts = [
        f"{a.get('name')} {a.get('value')} > {a.get('threshold')}"
        for a in data.get("alerts") or ()
        if isinstance(a, dict)
    ]
    crossed = f"; alerts: {', '.join(alerts)}" if alerts else ""
    return (
        f"healthy (engine {engine}, Redis {redis.get('redis_version')}, latency "
        f"{redis.get('latency_ms')} ms, version {data.get('version')}{crossed})"
    )


class _Verifier:
    """Runs the checks in order and prints one masked line for each."""

    def __init__(self, args: argparse.Namespace, out: TextIO, http: httpx.AsyncClient) -> None:
        self.base: str = args.base_url
        self.timeout: float = args.timeout
        self.token: str | None = args.token
        self.secret: str | None = args.jwt_secret
        self.plan: str = args.plan
        self.claims: tuple[str | None, str | None] = (args.jwt_audience, args.jwt_issuer)
        self.out = out
        self.gateway = GatewayClient(self.base, self.timeout, http)
        self.secrets = tuple(s for s in (self.token, self.secret) if s)
        self.passed = self.failed = 0
        self.user_token = self._token_for_new_user()
        self.session_id: str | None = None

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
        """Run one probe and print its line; `Unreachable` propagates.

        A `bounded` probe gets --timeout in all; the others bound each of their steps.
        """
        unreachable = False
        try:
            async with asyncio.timeout(self.timeout if bounded else None):
                mark, detail = OK, await probe()
        except Failed as failed:
            mark, detail, unreachable = FAIL, str(failed), isinstance(failed, Unreachable)
        except TimeoutError:
            mark, detail = FAIL, f"no answer within {self.timeout:g} s"
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # The gateway answered something the contract does not describe (not JSON, …).
            mark, detail = FAIL, f"unexpected answer ({type(exc).__name__}: {exc})"
        self.passed, self.failed = self.passed + (mark == OK), self.failed + (mark == FAIL)
        print(mask_text(f"{mark} {name}: {detail}", self.secrets), file=self.out, flush=True)
        if unreachable:
            raise Unreachable(detail)

    async def health(self) -> str:
        response = await self.gateway.get("/api/v1/voice/health")
        if response.status_code != 200:
            raise Failed(
                f"GET /api/v1/voice/health answered {response.status_code} "
                "(is BASE_URL the gateway?)"
            )
        data = response.json()
        return _judge_health(data if isinstance(data, dict) else {})

    async def ready(self) -> str:
        response = await self.gateway.get("/readyz")
        json_body = response.headers.get("content-type", "").startswith("application/json")
        state = response.json().get("status") if json_body else response.reason_phrase
        if response.status_code != 200:
            raise Failed(f"/readyz {response.status_code} ({state}): new sessions are refused")
        return f"/readyz {response.status_code} ({state})"

    async def voice(self) -> str:
        ws, first = await self.gateway.open(self.user_token)
        engine = str(first.get("engine"))
        try:
            turn = await audio_turn(ws, engine)
        finally:
            await ws.close()
        self.session_id = str(first.get("session_id"))
        turn.check(engine, PROBE_AUDIO)
        assert turn.latency is not None  # checked
        ttfa = f"first audio {turn.latency * 1000:.0f} ms after commit"
        if engine != "local":
            return f"{len(turn.audio) / 2 / RATE:.1f} s of audio back from {engine}, {ttfa}"
        return f"{len(PROBE_AUDIO)} bytes (1.0 s) echoed byte for byte by the local engine, {ttfa}"

    async def resume(self) -> str:
        if self.session_id is None:
            raise Failed("not checked: no voice session to resume")
        ws, first = await self.gateway.open(self.user_token, self.session_id)
        await ws.close()
        if first.get("resumed") is not True:
            raise Failed(f"resumed: {json.dumps(first.get('resumed'))}, expected true")
        if first.get("session_id") != self.session_id:
            raise Failed("resumed: true but with a different session id")
        return "resumed: true, same session id"

    async def rate_limit(self) -> str:
        if self.secret is None:
            raise Failed(
                "not checked: --rate-limit needs --jwt-secret, to spend a throwaway "
                "user's sessions rather than this token's user's quota"
            )
        token, admitted, busy = self._token_for_new_user(), 0, 0
        while admitted <= MAX_RATE_PROBES:
            try:
                async with asyncio.timeout(self.timeout):
                    ws, _ = await self.gateway.open(token)
            except Refused as refused:
                if refused.code != 4029:
                    raise Failed(f"session {admitted + 1} {refused}") from None
                if "concurrent" in refused.reason and busy < 50:
                    # The last session's lease is given back just after its close: not a
                    # refusal by the rate limit, and not counted by it. Try again shortly.
                    busy += 1
                    await asyncio.sleep(0.1)
                    continue
                figures = _RATE_FIGURES.search(refused.reason)
                limit = int(figures[1]) if figures else DEFAULT_SESSIONS_PER_WINDOW
                if admitted != limit:
                    raise Failed(
                        f"session {admitted + 1} refused, expected session "
                        f"{limit + 1}: {refused.reason}"
                    ) from None
                return (
                    f"sessions 1–{admitted} admitted, session {admitted + 1} refused with "
                    f'4029 "{refused.reason}"'
                )
            await ws.close()
            admitted += 1
        raise Failed(f"{admitted} sessions admitted and none refused")

    async def long_session(self, minutes: float, turn_every: float) -> str:
        check = LongSession(self.gateway, self.user_token, minutes * 60, turn_every, self.out)
        return await check.run()

    async def monitoring(self, seconds: float) -> None:
        """The four monitoring lines, judged on one window of readings."""
        progress = Progress(self.out, every=max(10.0, seconds / 3))
        progress.update(f"⏳ Monitoring: reading the gateway's figures for {seconds:g} s")
        judge: Judge | Failed
        try:
            judge = Judge(await collect(self.gateway, seconds, progress))
        except Failed as failed:
            judge = failed
        finally:
            progress.clear()
        verdicts: list[tuple[str, Callable[[Judge], str]]] = [
            ("Redis ops/s", Judge.ops),
            ("Redis memory", Judge.memory),
            ("Redis latency", Judge.latency),
            ("Redis errors", Judge.errors),
        ]
        for name, verdict in verdicts:

            async def judged(verdict: Callable[[Judge], str] = verdict) -> str:
                if isinstance(judge, Failed):
                    raise Failed(f"no readings: {judge}")
                return verdict(judge)

            await self.check(name, judged, bounded=False)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the checklist against `args.base_url`; 0 when every check passed, else 1."""
    async with httpx.AsyncClient(timeout=args.timeout) as http:
        verifier = _Verifier(args, out, http)
        print(f"Deployment checks for {mask_url(verifier.base)}", file=out)
        if verifier.secret is not None and len(verifier.secret.encode()) < 32:
            print("⚠️ the JWT secret is shorter than 32 bytes (RFC 7518 §3.2)", file=out)
        checks: list[tuple[str, Callable[[], Awaitable[str]], bool]] = [
            ("Health", verifier.health, True),
            ("Ready", verifier.ready, True),
            ("Voice session", verifier.voice, True),
            ("Resume", verifier.resume, True),
        ]
        if args.rate_limit:  # up to MAX_RATE_PROBES sessions: each one is bounded instead
            checks.append(("Rate limit", verifier.rate_limit, False))
        if args.long is not None:  # minutes: each turn is bounded instead
            long = functools.partial(verifier.long_session, args.long, args.turn_every)
            checks.append(("Long session", long, False))
        try:
            for name, probe, bounded in checks:
                await verifier.check(name, probe, bounded)
            if args.monitoring:
                await verifier.monitoring(args.monitoring_seconds)
        except Unreachable:
            print("The other checks were not run: the gateway does not answer.", file=out)
    print(f"\n{verifier.passed} passed, {verifier.failed} failed", file=out, flush=True)
    return 0 if verifier.failed == 0 else 1
