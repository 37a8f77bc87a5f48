"""The OpenAI Realtime engine: one GA Realtime WebSocket per conversation, over picows.

Events are relayed untouched and unparsed: each server frame goes to the voice connection from
the callback that read it. The engine only speaks on its own at set-up (the `session.update`
with the server's configuration, then the replayed history). Failures are mapped at this
boundary: a refused credential or an exhausted quota is `UpstreamRejected` and never retried;
anything that may pass (refused connection, 5xx, 429, timeout) is retried with backoff and ends
as `UpstreamUnavailable`. The API key appears in no message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSInvalidURL,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from voicegate._frames import MessageTooLarge, Reassembler
from voicegate._redact import mask_text
from voicegate._retry import Backoff, retry
from voicegate.conversation import Turn
from voicegate.engines._ga import history_events, session_update_event
from voicegate.engines.base import Engine, EngineConfig, EngineConversation, EngineEvents
from voicegate.errors import UpstreamClosed, UpstreamRejected, UpstreamUnavailable

if TYPE_CHECKING:
    from voicegate.config import Settings

__all__ = ["OpenAIConversation", "OpenAIEngine", "realtime_url"]

log = logging.getLogger("voicegate.engines.openai")
# An adapter, not a Logger: picows makes a child Logger for every connection from a Logger.
_PICOWS_LOG = logging.LoggerAdapter(logging.getLogger("picows.upstream"))

# Codes of a first `error` event (or of a handshake refusal's body) that no retry will cure.
REJECTION_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_not_active"}
)
_RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # session events can be large; audio deltas are ~100 ms
# picows grows its read buffer as messages need (and keeps it); an idle conversation stays small.
READ_BUFFER_BYTES = 2048
_TEXT, _BINARY, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
_CONTINUATION = WSMsgType.CONTINUATION


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

    async def connect(self, config: EngineConfig, history: Sequence[Turn]) -> OpenAIConversation:
        """Open a configured conversation with `history` replayed, retrying what may pass."""

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            log.warning(
                "Upstream connect failed (attempt %d/%d): %s; retrying in %.2fs",
                attempt,
                self.backoff.attempts,
                exc,
                delay,
            )

        try:
            return await retry(
                lambda: self._open(config, history),
                self.backoff,
                retry_on=(_Transient,),
                on_retry=on_retry,
            )
        except _Transient as exc:
            raise UpstreamUnavailable(
                f"OpenAI Realtime unreachable after {self.backoff.attempts} attempts: {exc}"
            ) from None

    async def _open(self, config: EngineConfig, history: Sequence[Turn]) -> OpenAIConversation:
        """One attempt: handshake, `session.update`, first server event, history."""
        try:
            transport, listener = await ws_connect(
                _UpstreamListener,
                self.url,
                extra_headers={"Authorization": f"Bearer {self._api_key}"},
                websocket_handshake_timeout=self.open_timeout,
                max_frame_size=MAX_MESSAGE_BYTES,
                read_buffer_init_size=READ_BUFFER_BYTES,
                logger_name=_PICOWS_LOG,
                # The event loop's own transport (uvloop's, in C): aiofastnet's, which picows
                # picks by default when installed, costs more memory per idle conversation
                # (`bench/run --only memory`).
                use_aiofastnet=False,
            )
        except WSHandshakeError as exc:
            raise self._refusal(exc) from None
        except WSInvalidURL as exc:  # configuration: no retry will change it
            raise UpstreamUnavailable(f"cannot connect to the upstream: {exc}") from None
        except (OSError, TimeoutError, WSError) as exc:
            raise _Transient(self._describe(exc)) from None
        assert isinstance(listener, _UpstreamListener)
        conversation = OpenAIConversation(transport, listener)
        try:
            await self._set_up(conversation, listener, config, history)
        except BaseException:
            await conversation.close()
            raise
        return conversation

    async def _set_up(
        self,
        conversation: OpenAIConversation,
        listener: _UpstreamListener,
        config: EngineConfig,
        history: Sequence[Turn],
    ) -> None:
        # If the upstream already closed, the refusal it sent first is still read below.
        with contextlib.suppress(UpstreamClosed):
            conversation.send(session_update_event(config))
        try:
            async with asyncio.timeout(self.open_timeout):
                first = await listener.first_event
        except TimeoutError:
            raise _Transient("no event from the upstream after connecting") from None
        except UpstreamClosed as exc:
            raise self._closed_during_set_up(exc) from None
        code = _error_code(first)
        if code is not None:
            if code in REJECTION_CODES:
                raise UpstreamRejected(f"OpenAI Realtime refused the session: {code}")
            raise _Transient(f"upstream error event at set-up: {code}")
        try:
            for event in history_events(history):
                conversation.send(event)
        except UpstreamClosed as exc:
            raise self._closed_during_set_up(exc) from None

    def _refusal(self, exc: WSHandshakeError) -> Exception:
        if exc.response is None:  # no HTTP answer at all: a broken connection
            return _Transient(self._describe(exc))
        status = int(exc.response.status)
        body = (exc.raw_body or b"").decode("utf-8", "replace")
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

    def _closed_during_set_up(self, exc: UpstreamClosed) -> Exception:
        code = next((c for c in REJECTION_CODES if c in str(exc)), None)
        if code is not None:
            return UpstreamRejected(f"OpenAI Realtime refused the session: {code}")
        return _Transient(f"closed during set-up ({self._describe(exc)})")

    def _describe(self, exc: BaseException) -> str:
        """An exception as text safe to log: whatever it says, never the key."""
        text = str(exc) or type(exc).__name__
        return mask_text(text, (self._api_key,))


class _UpstreamListener(WSListener):
    """picows callbacks of one upstream connection.

    Events wait in `pending` until the conversation is started, then go straight to the voice
    connection from `on_ws_frame`, the callback that read them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: EngineEvents | None = None
        self.pending: deque[bytes] = deque()
        self.first_event: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: UpstreamClosed | None = None
        self._fragments = Reassembler(MAX_MESSAGE_BYTES)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind in (_TEXT, _BINARY) and frame.fin:  # the hot path
            # bytes, not a memoryview: a copy costs less than a view compared and sliced
            event = frame.get_payload_as_bytes()
            if self.events is not None:
                self.events.on_engine_event(event)
            else:
                self._keep(event)
        elif kind == _CLOSE:
            code, reason = frame.get_close_code().value, frame.get_close_reason() or ""
            self.closed = UpstreamClosed(
                f"the upstream closed the connection (code {code})"
                + (f": {reason}" if reason else ""),
                code,
            )
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif kind in (_TEXT, _BINARY, _CONTINUATION):
            try:
                message = self._fragments.add(frame)
            except MessageTooLarge:
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
                return
            if message is not None:
                if self.events is not None:
                    self.events.on_engine_event(message)
                else:
                    self._keep(message)

    def _keep(self, event: bytes) -> None:
        self.pending.append(event)
        if not self.first_event.done():
            self.first_event.set_result(event)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        closed = self.closed or UpstreamClosed("the upstream connection was lost (code 1006)", 1006)
        self.closed = closed
        if not self.first_event.done():
            self.first_event.set_exception(closed)
            self.first_event.exception()  # retrieved: set-up may already have given up
        events, self.events = self.events, None
        if events is not None:
            events.on_engine_closed(closed)

    def pause_writing(self) -> None:
        if self.events is not None:
            self.events.on_engine_backpressure(True)

    def resume_writing(self) -> None:
        if self.events is not None:
            self.events.on_engine_backpressure(False)


class OpenAIConversation(EngineConversation):
    """An open Realtime WebSocket. Events pass as bytes; audio frames are never parsed."""

    def __init__(self, transport: WSTransport, listener: _UpstreamListener) -> None:
        self._transport = transport
        self._listener = listener
        self._closing = False

    def start(self, events: EngineEvents) -> None:
        listener = self._listener
        while listener.pending:
            events.on_engine_event(listener.pending.popleft())
        if listener.closed is not None:
            events.on_engine_closed(listener.closed)
        else:
            listener.events = events

    def send(self, event: bytes | str) -> None:
        """Send one GA client event as it is."""
        if self._listener.closed is not None or self._closing:
            raise UpstreamClosed(
                str(self._listener.closed or "the conversation is closed"),
                self._listener.closed.code if self._listener.closed else 1000,
            )
        self._transport.send(_TEXT, event)

    def sender(self) -> Callable[[bytes], None]:
        # picows drops a frame sent after the close or the disconnect.
        return functools.partial(self._transport.send, _TEXT)

    def pause_reading(self) -> None:
        self._transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._transport.underlying_transport.is_closing():
            self._transport.underlying_transport.resume_reading()

    async def close(self) -> None:
        """Close the WebSocket (normal closure); safe to call twice."""
        self._listener.events = None
        if self._closing:
            return
        self._closing = True
        if self._listener.closed is None:
            self._transport.send_close(WSCloseCode.OK)
        self._transport.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._transport.wait_disconnected()


def _error_code(event: bytes) -> str | None:
    """The `error.code` (or `error.type`) of an `error` event, else None. Set-up only."""
    if b'"error"' not in event[:200]:
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
