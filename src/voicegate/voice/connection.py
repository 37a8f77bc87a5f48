"""One client connection: admission, the relay both ways, and how it ends.

The relay runs inside the callbacks that read each message: a client frame is checked and sent
to the engine from the transport's read callback, an engine event renamed (for beta clients),
noted (finished turns) and sent to the client from the engine's. No task, no queue per message.
The connection's life is one `ConnectionState` (voice/state.py), changed only through `_move`.
How a connection ends is decided once, by `end(EndReason)`; `_shut_down` carries it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from voicegate.errors import AdmissionError, ClientEventError, UpstreamClosed
from voicegate.ops.metrics import RELAY_BYTES, RELAY_MESSAGES, SESSIONS_ACTIVE
from voicegate.voice.dialect import Dialect, rename_for_beta
from voicegate.voice.protocol import audio_fast_path, error_event, translate_client_event
from voicegate.voice.record_keeper import TURN_EVENTS, RecordKeeper
from voicegate.voice.state import ConnectionState, Ending, EndReason, RelayCounts, check_move

if TYPE_CHECKING:
    from voicegate.storage import Lease, SessionRecord
    from voicegate.voice.engine_link import EngineLink
    from voicegate.voice.service import VoiceService
    from voicegate.voice.transport import ClientHello, ClientTransport

__all__ = ["VoiceConnection"]

log = logging.getLogger("voicegate.session")


# Refusals told the Realtime API's way to SDK clients (`/v1/realtime`): some SDKs retry a close
# they did not expect unless an `error` event with one of OpenAI's codes came first.
_SDK_REFUSAL_CODES = {
    4001: "invalid_api_key",
    4003: "insufficient_quota",
    4029: "rate_limit_exceeded",
    4004: "session_not_found",
    1008: "feature_disabled",
    1013: "try_again_later",
}
# In a session record's preferences: its client spoke the beta names, so that a resume replays
# the conversation under them (the replay comes before the client says anything).
_CLIENT_EVENTS = "client_events"
_AUDIO_DELTA = b"response.output_audio.delta"
_BETA_AUDIO_DELTA = b"response.audio.delta"
_TYPE_FIRST = re.compile(rb'\s*\{\s*"type"\s*:\s*"([^"\\]*)"')
# An audio delta as OpenAI and the local engine write it (compact, `type` first): told by its
# first bytes; the regex was the largest single cost of relaying a frame (`bench.instructions`).
_DELTA_HEAD = b'{"type":"' + _AUDIO_DELTA + b'"'
_BETA_DELTA_HEAD = b'{"type":"' + _BETA_AUDIO_DELTA + b'"'
_AT_DELTA_HEAD, _AFTER_DELTA_HEAD = slice(len(_DELTA_HEAD)), slice(len(_DELTA_HEAD), None)
# Enum members read on every frame: a module constant is one dict lookup; `Enum.member` takes
# the slow attribute path of a class whose metaclass defines `__getattr__` (~16× the time).
_OPEN, _ADMITTING, _RECONNECTING = (
    ConnectionState.OPEN,
    ConnectionState.ADMITTING,
    ConnectionState.RECONNECTING,
)
_GA, _BETA = Dialect.GA, Dialect.BETA
_CLOSING_SECONDS = 2.0  # longest wait to deliver the last event and the close frame


def _nowhere(event: bytes) -> None:
    """Where client events go while no engine conversation is open (never while OPEN)."""
    raise UpstreamClosed("no engine conversation yet", 1006)


class VoiceConnection:
    """The life of one client connection, from admission to the close frame."""

    __slots__ = (
        "_cap_timer",
        "_counted",
        "_detail",
        "_ending",
        "_held",
        "_pauses",
        "_responding",
        "_slow_timer",
        "_tasks",
        "_to_client",
        "_to_engine",
        "auto_dialect",
        "closed",
        "counts",
        "dialect",
        "gateway_events",
        "hello",
        "idle_ticks",
        "keeper",
        "lease",
        "link",
        "record",
        "resumed",
        "seen",
        "service",
        "state",
        "transport",
    )

    def __init__(self, service: VoiceService, transport: ClientTransport, hello: ClientHello):
        self.service = service
        self.transport = transport
        self.hello = hello
        self.state = ConnectionState.ADMITTING
        settings = service.settings
        self.auto_dialect = settings.voice_client_events == "auto"
        wants_beta = settings.voice_client_events == "beta" or (
            self.auto_dialect and hello.query.get("events") == "beta"
        )
        self.dialect = Dialect.BETA if wants_beta else Dialect.GA
        # OpenAI's path serves SDKs that stop at events they do not know.
        self.gateway_events = not hello.openai_path or hello.query.get("gateway_events") == "true"
        self.counts = RelayCounts()
        self._to_client = transport.sender()
        self._to_engine: Callable[[bytes], None] = _nowhere
        self.seen = True  # a message arrived since the last heartbeat (keepalive)
        self.idle_ticks = 0
        self.record: SessionRecord | None = None
        self.lease: Lease | None = None
        self.link: EngineLink | None = None
        self.resumed = False
        self._responding = False  # between `response.created` and `response.done`
        self._ending: EndReason | None = None
        self._held: list[bytes] = []  # client messages read while the engine reconnects
        self._pauses: set[str] = set()  # why the client's messages are not read now
        self._cap_timer: asyncio.TimerHandle | None = None
        self._slow_timer: asyncio.TimerHandle | None = None
        self._counted = False  # in SESSIONS_ACTIVE
        self._detail: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.keeper: RecordKeeper | None = None
        self.closed = asyncio.Event()

    # -- identity, for the registry and the logs ---------------------------------------------

    @property
    def session_id(self) -> str:
        return self.record.session_id if self.record else ""

    @property
    def user_id(self) -> str:
        return self.record.user_id if self.record else ""

    @property
    def log_extra(self) -> dict[str, str]:
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "engine": self.service.engine.name,
        }

    @property
    def leaves_resumable(self) -> bool:
        """The session stays attached to its user when this connection ends."""
        grace = self.service.settings.voice_resume_grace_seconds
        return self._ending is not None and self._ending.value.resumable and grace > 0

    def _move(self, state: ConnectionState) -> None:
        self.state = check_move(self.state, state)

    # -- admission ----------------------------------------------------------------------------

    def begin(self) -> None:
        """Start admission; the client's messages wait until it is done."""
        self._pause("admission")
        self._spawn(self._admit())

    async def _admit(self) -> None:
        service = self.service
        try:
            admitted = await service.admission.admit(self.hello, service)
        except AdmissionError as refusal:
            self._move(ConnectionState.CLOSED)
            if not self.gateway_events:  # SDKs stop retrying on OpenAI's own error codes
                code = _SDK_REFUSAL_CODES.get(refusal.code, "server_error")
                self._send_error(code, refusal.reason)
            self.transport.close(refusal.code, refusal.reason)
            self.closed.set()
            return
        self.record, self.lease, self.link = admitted.record, admitted.lease, admitted.link
        self.resumed = admitted.resumed
        settings = service.settings
        self.keeper = RecordKeeper(
            self.record,
            service.storage,
            ttl=settings.session_ttl_seconds,
            max_turns=settings.voice_conversation_max_turns,
            spawn=self._spawn,
        )
        beta_before = self.record.preferences.get(_CLIENT_EVENTS) == Dialect.BETA.value
        if self.auto_dialect and beta_before and "events" not in self.hello.query:
            self.dialect = Dialect.BETA
        if self._ending is not None:  # the client left during admission
            self._shut_down_soon()
            return
        self._move(ConnectionState.OPEN)
        SESSIONS_ACTIVE.inc()
        self._counted = True
        service.registry.attach(self)
        log.info(
            "Voice session %s %s for user %s",
            self.session_id,
            "resumed" if self.resumed else "started",
            self.user_id,
            extra=self.log_extra,
        )
        if self.gateway_events:
            self._send_event(
                "gateway.session",
                session_id=self.session_id,
                resumed=self.resumed,
                engine=service.engine.name,
                expires_in=service.settings.session_ttl_seconds,
            )
        self.link.start(self)
        self._to_engine = self.link.sender()
        cap = service.settings.voice_max_session_seconds
        self._cap_timer = asyncio.get_running_loop().call_later(cap, self._time_up, cap)
        if service.draining:  # admitted while the drain began: it missed us
            self.end(EndReason.DRAINING)
            return
        held, self._held = self._held, []
        for payload in held:  # read before admission was done
            self.on_client_message(payload)
        self._resume("admission")

    # -- client → engine ----------------------------------------------------------------------

    def on_client_message(self, payload: bytes) -> None:
        """One text message from the client (called from the transport's read callback)."""
        counts = self.counts
        counts.messages_in += 1
        counts.bytes_in += len(payload)
        if self.state is not _OPEN:
            if self.state is _ADMITTING or self.state is _RECONNECTING:
                self._held.append(payload)  # reading is paused: at most what was already read
            return
        fast = audio_fast_path(payload)
        if fast is None:
            self._client_event(payload)
            return
        if fast[1] and self.auto_dialect and self.dialect is _GA:
            self._speaks_beta()
        # try/except costs nothing when nothing is raised; suppress() would add a context
        # manager to every frame.
        try:  # noqa: SIM105
            self._to_engine(fast[0])
        except UpstreamClosed:
            pass  # the engine is gone: `on_engine_closed` reconnects or ends the connection

    def _client_event(self, payload: bytes) -> None:
        try:
            translated = translate_client_event(payload, self.service.policy)
        except ClientEventError as exc:
            self.transport.send(error_event(exc))
            return
        if translated.legacy and self.auto_dialect and self.dialect is Dialect.GA:
            self._speaks_beta()
        if translated.preferences:
            self.keeper.remember(translated.preferences)  # type: ignore[union-attr]  # OPEN
        if translated.upstream is None or (translated.if_responding and not self._responding):
            return  # an `interrupt` while nothing plays: nothing to stop, nothing to say
        with contextlib.suppress(UpstreamClosed):  # `on_engine_closed` deals with it
            self._to_engine(translated.upstream)

    def _speaks_beta(self) -> None:
        """The client spoke the original front-end's events: beta names from now on, for this
        connection and for the session's next ones."""
        self.dialect = Dialect.BETA
        self.keeper.remember({_CLIENT_EVENTS: Dialect.BETA.value})  # type: ignore[union-attr]

    def on_client_binary(self) -> None:
        error = ClientEventError("binary_frame", "binary frames are not accepted; send JSON text")
        self.transport.send(error_event(error))

    def on_client_closed(self) -> None:
        """The client sent a close frame: the conversation is over (not resumable)."""
        self.end(EndReason.CLIENT_CLOSED)

    def on_transport_lost(self) -> None:
        """The connection is gone; without a close frame from the client it may come back."""
        self.end(EndReason.CLIENT_DROPPED)

    def on_message_too_large(self, limit: int) -> None:
        self.end(EndReason.TOO_LARGE, f"Message too large (max {limit} bytes)")

    def on_client_backpressure(self, paused: bool) -> None:
        """The client stopped (or resumed) reading what we send it."""
        if paused:
            self._pause("client-full")
            if self.link is not None:
                self.link.pause_reading()
            seconds = self.service.settings.voice_slow_client_seconds
            if self._slow_timer is None:
                loop = asyncio.get_running_loop()
                self._slow_timer = loop.call_later(seconds, self._slow_client, seconds)
        else:
            self._resume("client-full")
            if self.link is not None:
                self.link.resume_reading()
            if self._slow_timer is not None:
                self._slow_timer.cancel()
                self._slow_timer = None

    # -- engine → client ----------------------------------------------------------------------

    def on_engine_event(self, event: bytes | memoryview) -> None:
        """One server event from the engine (called from the engine's read callback)."""
        if event[_AT_DELTA_HEAD] == _DELTA_HEAD:  # most of the traffic
            if self.dialect is _BETA:
                event = _BETA_DELTA_HEAD + event[_AFTER_DELTA_HEAD]
        else:  # every other event, audio deltas written another way included
            match = _TYPE_FIRST.match(event, 0, 128)
            event = self._engine_event(match[1] if match else None, bytes(event))
        counts = self.counts
        counts.messages_out += 1
        counts.bytes_out += len(event)
        self._to_client(event)

    def _engine_event(self, kind: bytes | None, event: bytes) -> bytes:
        if kind == b"response.created":
            self._responding = True
        elif kind == b"response.done":
            self._responding = False
        elif kind in TURN_EVENTS:
            self.keeper.note_turn(kind, event)  # type: ignore[union-attr]  # set when OPEN
        for secret in self.service.relay_secrets:  # e.g. an upstream error quoting the API key
            if secret in event:
                event = event.replace(secret, b"***")
        return rename_for_beta(event) if self.dialect is Dialect.BETA else event  # type: ignore[return-value]

    def on_engine_backpressure(self, paused: bool) -> None:
        (self._pause if paused else self._resume)("engine-full")

    def on_engine_closed(self, error: UpstreamClosed) -> None:
        if self.state is ConnectionState.OPEN:
            self._move(ConnectionState.RECONNECTING)
            self._pause("reconnecting")
            self._spawn(self._reconnect(error))

    async def _reconnect(self, error: UpstreamClosed) -> None:
        """Restore a lost engine connection with the conversation replayed; else end with 1011."""
        log.warning("Engine connection lost (%s), reconnecting", error, extra=self.log_extra)
        assert self.link is not None
        try:
            await self.link.reconnect(self)
        except Exception as exc:  # any failure ends the session the same way
            log.error(
                "Voice session %s lost its engine and could not reconnect: %s",
                self.session_id,
                exc,
                extra=self.log_extra,
            )
            self.end(EndReason.ENGINE_LOST)
            return
        if self.state is not ConnectionState.RECONNECTING:  # ended meanwhile
            return
        self._to_engine = self.link.sender()
        self._move(ConnectionState.OPEN)
        if self.gateway_events:
            self._send_event("gateway.upstream_reconnected")
        held, self._held = self._held, []
        for payload in held:
            self.on_client_message(payload)
        self._resume("reconnecting")

    # -- called by the registry ---------------------------------------------------------------

    def taken_over(self) -> None:
        """A newer connection resumed this session (here or on another instance)."""
        self.end(EndReason.TAKEN_OVER)

    async def drain(self) -> None:
        """The server restarts: `gateway.draining`, save, close with 1001."""
        self.end(EndReason.DRAINING)
        await self.closed.wait()

    def flush_counts(self) -> None:
        counts = self.counts
        if counts.messages_in:
            RELAY_MESSAGES.labels("client_to_engine").inc(counts.messages_in)
            RELAY_BYTES.labels("client_to_engine").inc(counts.bytes_in)
        if counts.messages_out:
            RELAY_MESSAGES.labels("engine_to_client").inc(counts.messages_out)
            RELAY_BYTES.labels("engine_to_client").inc(counts.bytes_out)
        self.counts = RelayCounts()

    # -- the end ------------------------------------------------------------------------------

    def end(self, reason: EndReason, detail: str | None = None) -> None:
        """Decide how the connection ends; the first decision wins."""
        if self._ending is not None or self.state is ConnectionState.CLOSED:
            return
        self._ending = reason
        self._detail = detail
        if self.state is not ConnectionState.ADMITTING:  # else admission finishes first
            self._shut_down_soon()

    def _time_up(self, seconds: float) -> None:
        self.end(EndReason.TIME_UP, f"Session time limit reached ({seconds:g} s)")

    def _slow_client(self, seconds: float) -> None:
        self.end(
            EndReason.SLOW_CLIENT, f"Client is not reading: send buffer full for {seconds:g} s"
        )

    def _shut_down_soon(self) -> None:
        self._move(ConnectionState.CLOSING)
        for timer in (self._cap_timer, self._slow_timer):
            if timer is not None:
                timer.cancel()
        self._spawn(self._shut_down())

    async def _shut_down(self) -> None:
        ending = self._ending
        assert ending is not None and self.record is not None and self.lease is not None
        spec: Ending = ending.value
        service, record = self.service, self.record
        # 1. Stop relaying: the engine conversation closes, the registry forgets us.
        service.registry.detach(self)
        if self._counted:
            SESSIONS_ACTIVE.dec()
        self.flush_counts()
        keeper = self.keeper
        assert keeper is not None
        keeper.stop()
        try:
            # 2. At once: close the engine, save the record (which also restarts its TTL) and
            #    give the lease back, unless a newer connection owns the session now (a client
            #    reconnecting right away must find its slot free).
            steps: list[Any] = [self.link.close()] if self.link is not None else []
            if ending is not EndReason.TAKEN_OVER:
                steps.append(keeper.save())
                steps.append(
                    service.storage.release(
                        record.user_id,
                        record.session_id,
                        self.lease.connection_id,
                        resumable=self.leaves_resumable,
                    )
                )
            results = await asyncio.gather(*steps, return_exceptions=True)
            for failure in (r for r in results if isinstance(r, Exception)):
                log.warning(
                    "Ending session %s: %s", record.session_id, failure, extra=self.log_extra
                )
            # 3. Tell the client how it ended (a client that stopped reading cannot hold us).
            if spec.code is not None:
                reason = self._detail or spec.reason
                if spec.notice is not None and self.gateway_events:
                    self._send_event(spec.notice)
                if ending is EndReason.TIME_UP:
                    cap = service.settings.voice_max_session_seconds
                    if self.gateway_events:
                        self._send_event("session.timeout", max_seconds=cap, message=reason)
                    else:  # OpenAI's own way of saying it, for SDKs that stop at unknown events
                        self._send_error("session_expired", reason)
                self.transport.close(spec.code, reason)
        finally:
            self._move(ConnectionState.CLOSED)
            self.closed.set()
        how = f"close {spec.code}" if spec.code else spec.reason
        log.info("Voice session %s ended (%s)", record.session_id, how, extra=self.log_extra)

    # -- plumbing -----------------------------------------------------------------------------

    def _send_event(self, kind: str, **fields: Any) -> None:
        """One of the gateway's own events; like every event, it carries an `event_id`."""
        event = {"type": kind, "event_id": f"event_gw_{secrets.token_hex(8)}", **fields}
        self.transport.send(json.dumps(event, separators=(",", ":")).encode())

    def _send_error(self, code: str, message: str) -> None:
        self.transport.send(error_event(ClientEventError(code, message)))

    def _pause(self, why: str) -> None:
        if not self._pauses:
            self.transport.pause_reading()
        self._pauses.add(why)

    def _resume(self, why: str) -> None:
        if why in self._pauses:
            self._pauses.discard(why)
            if not self._pauses:
                self.transport.resume_reading()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` in a task that is kept until done; a failure ends the connection 1011."""
        task = asyncio.create_task(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Voice session %s failed", self.session_id, extra=self.log_extra)
            with contextlib.suppress(Exception):
                self.end(EndReason.INTERNAL_ERROR)
