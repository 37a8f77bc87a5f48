"""The OpenAI Realtime engine: one GA Realtime WebSocket per conversation.

Events are relayed as text, untouched: the engine only speaks on its own at set-up (the
`session.update` with the server's configuration, then the replayed history). Failures are mapped
at this boundary: a refused credential or an exhausted quota is `UpstreamRejected` and never
retried; anything that may pass (refused connection, 5xx, 429 rate limit, timeout) is retried
with backoff and ends as `UpstreamUnavailable`. The API key appears in no message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidProxy,
    InvalidStatus,
    InvalidURI,
)

from voicegate._redact import mask_text
from voicegate._retry import Backoff, retry
from voicegate.conversation import Turn
from voicegate.engines._ga import history_events, session_update_event
from voicegate.engines.base import Engine, EngineConfig, EngineSession
from voicegate.errors import UpstreamClosed, UpstreamRejected, UpstreamUnavailable

if TYPE_CHECKING:
    from voicegate.config import Settings

__all__ = ["OpenAIEngine", "OpenAISession"]

log = logging.getLogger("voicegate.engines.openai")

# Codes of a first `error` event (or of a handshake refusal's body) that no retry will cure.
REJECTION_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_not_active"}
)
_RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # session events can be large; audio deltas are ~100 ms


class _Transient(Exception):
    """A set-up failure worth another attempt."""


def realtime_url(url: str, model: str) -> str:
    """`url` with `?model=` set (kept with any query the operator configured)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
    query.append(("model", model))
    return urlunsplit(parts._replace(query=urlencode(query)))


class OpenAIEngine(Engine):
    """Factory of conversations with the OpenAI Realtime API (or an endpoint speaking it)."""

    name = "openai"

    def __init__(
        self,
        api_key: str,
        *,
        url: str = "wss://api.openai.com/v1/realtime",
        model: str = "gpt-realtime",
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self._api_key = api_key
        self.url = realtime_url(url, model)
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIEngine:
        """The engine configured by `OPENAI_*` and `RETRY_*`; needs `OPENAI_API_KEY`."""
        if settings.openai_api_key is None:
            raise ValueError("OPENAI_API_KEY is not set")
        return cls(
            settings.openai_api_key.get_secret_value(),
            url=settings.openai_realtime_url,
            model=settings.openai_realtime_model,
            backoff=Backoff.from_settings(settings),
        )

    def __repr__(self) -> str:
        return f"OpenAIEngine(url={self.url!r})"

    async def connect(self, config: EngineConfig, history: list[Turn]) -> OpenAISession:
        """Open a configured conversation with `history` replayed, retrying what may pass."""

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            log.warning(
                "Upstream connect failed (attempt %d/%d): %s; retrying in %.2fs",
                attempt, self.backoff.attempts, exc, delay,
            )  # fmt: skip

        try:
            return await retry(
                lambda: self._open(config, history), self.backoff,
                retry_on=(_Transient,), on_retry=on_retry,
            )  # fmt: skip
        except _Transient as exc:
            raise UpstreamUnavailable(
                f"OpenAI Realtime unreachable after {self.backoff.attempts} attempts: {exc}"
            ) from None

    async def _open(self, config: EngineConfig, history: list[Turn]) -> OpenAISession:
        """One attempt: handshake, `session.update`, first server event, history."""
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self._api_key}"},
                compression=None,  # audio does not compress; deflate would only cost CPU
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=self.open_timeout,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            raise self._refusal(exc) from None
        except (InvalidURI, InvalidProxy) as exc:  # configuration: no retry will change it
            raise UpstreamUnavailable(f"cannot connect to the upstream: {exc}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Transient(self._describe(exc)) from None
        try:
            first = await self._set_up(ws, config, history)
        except BaseException:
            await ws.close()
            raise
        return OpenAISession(ws, first)

    async def _set_up(self, ws: ClientConnection, config: EngineConfig, history: list[Turn]) -> str:
        # If the upstream already closed, the refusal it sent first is still readable below.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(session_update_event(config))
        try:
            async with asyncio.timeout(self.open_timeout):
                first = _text(await ws.recv())
        except TimeoutError:
            raise _Transient("no event from the upstream after connecting") from None
        except ConnectionClosed as exc:
            raise self._closed_during_set_up(exc) from None
        code = _error_code(first)
        if code is not None:
            if code in REJECTION_CODES:
                raise UpstreamRejected(f"OpenAI Realtime refused the session: {code}")
            raise _Transient(f"upstream error event at set-up: {code}")
        try:
            for event in history_events(history):
                await ws.send(event)
        except ConnectionClosed as exc:
            raise self._closed_during_set_up(exc) from None
        return first

    def _refusal(self, exc: InvalidStatus) -> Exception:
        status = exc.response.status_code
        body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
        code = next((c for c in REJECTION_CODES if c in body), None)
        if status in (401, 403) or code is not None:
            reason = code or ("invalid_api_key" if status == 401 else "forbidden")
            return UpstreamRejected(f"OpenAI Realtime refused the session: HTTP {status} {reason}")
        if status in _RETRIED_STATUSES:
            return _Transient(f"HTTP {status} at the handshake")
        # 400, 404, …: a wrong URL or model; retrying would only repeat the answer.
        return UpstreamUnavailable(
            f"OpenAI Realtime answered HTTP {status} at the handshake: "
            "check OPENAI_REALTIME_URL and OPENAI_REALTIME_MODEL"
        )

    def _closed_during_set_up(self, exc: ConnectionClosed) -> Exception:
        reason = exc.rcvd.reason if exc.rcvd else ""
        code = next((c for c in REJECTION_CODES if c in reason), None)
        if code is not None:
            return UpstreamRejected(f"OpenAI Realtime refused the session: {code}")
        return _Transient(f"closed during set-up ({self._describe(exc)})")

    def _describe(self, exc: BaseException) -> str:
        """An exception as text safe to log: whatever it says, never the key."""
        text = str(exc) or type(exc).__name__
        return mask_text(text, (self._api_key,))


class OpenAISession(EngineSession):
    """An open Realtime WebSocket. Events pass as text; audio frames are never parsed."""

    def __init__(self, ws: ClientConnection, first_event: str | None = None) -> None:
        self._ws = ws
        # The first server event, read at set-up to spot a refusal, is still the client's.
        self._pending = collections.deque([first_event] if first_event is not None else [])

    async def send(self, event: str) -> None:
        """Send one GA client event as it is."""
        try:
            await self._ws.send(event)
        except ConnectionClosed as exc:
            raise _upstream_closed(exc) from None

    async def receive(self) -> str:
        """The next server event, as text."""
        if self._pending:
            return self._pending.popleft()
        try:
            return _text(await self._ws.recv())
        except ConnectionClosed as exc:
            raise _upstream_closed(exc) from None

    async def close(self) -> None:
        """Close the WebSocket (normal closure); safe to call twice."""
        await self._ws.close()


def _text(message: str | bytes) -> str:
    return message if isinstance(message, str) else message.decode("utf-8", "replace")


def _error_code(event: str) -> str | None:
    """The `error.code` (or `error.type`) of an `error` event, else None. Set-up only."""
    if '"error"' not in event[:200]:
        return None
    try:
        parsed: Any = json.loads(event)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("type") != "error":
        return None
    error = parsed.get("error")
    if not isinstance(error, dict):
        return "unknown_error"
    code = error.get("code") or error.get("type") or "unknown_error"
    return str(code)


def _upstream_closed(exc: ConnectionClosed) -> UpstreamClosed:
    frame = exc.rcvd or exc.sent
    code = frame.code if frame is not None else 1006
    reason = f": {frame.reason}" if frame is not None and frame.reason else ""
    return UpstreamClosed(f"the upstream closed the connection (code {code}){reason}", code)
