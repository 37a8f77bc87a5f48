"""One admitted voice connection: the relay both ways, the session record, the time cap.

Two tasks run beside each other until one of them, or the gateway, decides how it ends:

    client → engine   translate and forward client events (audio frames are not parsed)
    engine → client   forward server events, note finished turns for the session record

The record is written after a turn or a preference change (never per frame), by a short task
started only then; a timer enforces the per-connection cap (`session.timeout`, then 4008). The
lease is renewed by the gateway's one heartbeat for all connections (gateway.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import sentry_sdk
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicegate.conversation import Turn
from voicegate.engines import EngineSession
from voicegate.errors import ClientEventError, EngineError, UpstreamClosed
from voicegate.ops.metrics import RELAY_BYTES, RELAY_MESSAGES, SESSIONS_ACTIVE, UPSTREAM_RECONNECTS
from voicegate.voice.protocol import (
    apply_preferences,
    error_event,
    event_type,
    fit_close_reason,
    rename_for_beta,
    translate_client_event,
)
from voicegate.voice.service import DRAINING, Admitted, Gateway

log = logging.getLogger("voicegate.session")

# Server events that end a turn and carry its text: (role, field holding the text).
_TURN_EVENTS = {
    "conversation.item.input_audio_transcription.completed": ("user", "transcript"),
    "response.output_audio_transcript.done": ("assistant", "transcript"),
    "response.output_text.done": ("assistant", "text"),
}
_CLOSING_SECONDS = 2.0  # longest wait to deliver the last event and the close frame
DRAINING_EVENT = '{"type": "gateway.draining"}'


class VoiceConnection:
    """The life of one client connection after admission."""

    def __init__(self, gateway: Gateway, websocket: WebSocket, admitted: Admitted, beta: bool):
        self.gateway = gateway
        self.websocket = websocket
        self.record = admitted.record
        self.lease = admitted.lease
        self.engine: EngineSession = admitted.engine
        self.resumed = admitted.resumed
        self.config = gateway.engine_config(self.record)
        self.beta = beta
        self._close: tuple[int, str] | None = None
        self._notice: str | None = None
        self._ended = asyncio.Event()
        self._finished = asyncio.Event()
        self._dirty = False
        self._saving: asyncio.Task[None] | None = None
        self._engine_ready = asyncio.Event()
        self._engine_ready.set()
        self._client_gone = False
        self._taken_over = False
        self._counts = [0, 0, 0, 0]  # messages in, bytes in, messages out, bytes out
        self._log_extra = {
            "session_id": self.record.session_id,
            "user_id": self.record.user_id,
            "engine": gateway.engine.name,
        }

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self.gateway.settings
        sid = self.record.session_id
        with sentry_sdk.isolation_scope() as scope:
            scope.set_tag("session_id", sid)
            scope.set_tag("engine", self.gateway.engine.name)
            scope.set_user({"id": self.record.user_id})
            await self._send(json.dumps({
                "type": "gateway.session", "session_id": sid, "resumed": self.resumed,
                "engine": self.gateway.engine.name, "expires_in": settings.session_ttl_seconds,
            }))  # fmt: skip
            self.gateway.attach(sid, self)
            if self.gateway.draining:  # admitted while the drain began: it missed us
                self._end(1001, DRAINING, notice=DRAINING_EVENT)
            SESSIONS_ACTIVE.inc()
            log.info(
                "Voice session %s %s for user %s", sid, "resumed" if self.resumed else "started",
                self.record.user_id, extra=self._log_extra,
            )  # fmt: skip
            tasks = [
                asyncio.create_task(self._guard(self._from_client())),
                asyncio.create_task(self._guard(self._from_engine())),
            ]
            cap = settings.voice_max_session_seconds
            timer = asyncio.get_running_loop().call_later(cap, self._time_up, cap)
            try:
                await self._ended.wait()
            finally:
                timer.cancel()
                await self._shut_down(tasks)

    async def _shut_down(self, tasks: list[asyncio.Task[None]]) -> None:
        # 1. Stop the loops (and a save in flight); nothing is relayed after this point.
        if self._saving is not None:
            tasks.append(self._saving)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.gateway.detach(self.record.session_id, self)
        SESSIONS_ACTIVE.dec()
        self.flush_counts()
        storage, record = self.gateway.storage, self.record
        try:
            # 2. At once: save the record (which also restarts its TTL) and give the lease back,
            #    unless a newer connection owns the session now (a client reconnecting right
            #    away must find its slot free), and close the engine conversation.
            steps = [self.engine.close()]
            if not self._taken_over:
                lease_id = self.lease.connection_id
                steps += [
                    self._save(),
                    storage.release(record.user_id, record.session_id, lease_id),
                ]
            await asyncio.gather(*steps, return_exceptions=True)  # the close frame goes anyway
            # 3. Tell the client how it ended; a client that stopped reading cannot hold us.
            if not self._client_gone and self._close is not None:
                code, reason = self._close
                with contextlib.suppress(RuntimeError, OSError, TimeoutError):
                    async with asyncio.timeout(_CLOSING_SECONDS):
                        if self._notice is not None:
                            await self.websocket.send_text(self._notice)
                        await self.websocket.close(code, fit_close_reason(reason))
        finally:
            self._finished.set()
        how = f"close {self._close[0]}" if self._close else "client left"
        log.info("Voice session %s ended (%s)", record.session_id, how, extra=self._log_extra)

    def _end(self, code: int, reason: str, notice: str | None = None) -> None:
        """Decide how the connection ends (the first decision wins); `notice` is an event
        sent just before the close frame."""
        if self._close is None and not self._ended.is_set():
            self._close = (code, reason)
            self._notice = notice
        self._ended.set()

    async def _guard(self, loop: Any) -> None:
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Voice session %s failed", self.record.session_id, extra=self._log_extra)
            self._end(1011, "Internal error")

    # -- called by the gateway --------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return self.record.user_id

    @property
    def session_id(self) -> str:
        return self.record.session_id

    def taken_over(self) -> None:
        self._taken_over = True
        self._end(4409, "Session resumed by a newer connection")

    async def drain(self) -> None:
        self._end(1001, DRAINING, notice=DRAINING_EVENT)
        await self._finished.wait()

    # -- the loops --------------------------------------------------------------------------

    async def _from_client(self) -> None:
        limit = self.gateway.settings.voice_max_message_bytes
        receive, counts = self.websocket.receive, self._counts
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._client_gone = True
                self._ended.set()
                return
            text = message.get("text")
            if text is None:
                await self._send(
                    error_event("binary_frame", "binary frames are not accepted; send JSON text")
                )
                continue
            size = len(text)
            if size * 4 > limit and len(text.encode()) > limit:
                self._end(1009, f"Message too large (max {limit} bytes)")
                return
            counts[0] += 1
            counts[1] += size
            try:
                translated = translate_client_event(text, self.config)
            except ClientEventError as exc:
                await self._send(error_event(exc.code, exc.message))
                continue
            if translated.preferences:
                self._remember(translated.preferences)
            if translated.upstream is not None:
                await self._to_engine(translated.upstream)

    async def _to_engine(self, event: str) -> None:
        try:
            await self.engine.send(event)
        except UpstreamClosed:
            # The engine loop reconnects (or ends the connection); this event is dropped.
            await self._engine_ready.wait()

    async def _from_engine(self) -> None:
        send, counts, beta = self.websocket.send_text, self._counts, self.beta
        while True:
            try:
                text = await self.engine.receive()
            except UpstreamClosed as exc:
                if not await self._reconnect_engine(exc):
                    return
                continue
            kind = event_type(text)
            if kind in _TURN_EVENTS:
                self._note_turn(kind, text)
            if beta:
                text = rename_for_beta(text)
            counts[2] += 1
            counts[3] += len(text)
            try:
                await send(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._client_gone = True
                self._ended.set()
                return

    async def _reconnect_engine(self, closed: UpstreamClosed) -> bool:
        """Restore a lost engine connection with the conversation replayed; else end with 1011."""
        self._engine_ready.clear()
        log.warning("Engine connection lost (%s), reconnecting", closed, extra=self._log_extra)
        try:
            self.engine = await self.gateway.connect_engine(self.record)
        except EngineError as exc:
            log.error("Voice session %s lost its engine and could not reconnect: %s",
                      self.record.session_id, exc, extra=self._log_extra)  # fmt: skip
            self._end(1011, "Voice engine connection lost")
            return False
        finally:
            self._engine_ready.set()
        UPSTREAM_RECONNECTS.labels(self.gateway.engine.name).inc()
        await self._send('{"type": "gateway.upstream_reconnected"}')
        return True

    def _time_up(self, seconds: float) -> None:
        timeout = json.dumps({"type": "session.timeout", "max_seconds": seconds})
        self._end(4008, f"Session time limit reached ({seconds:g} s)", notice=timeout)

    # -- the session record -----------------------------------------------------------------

    def _note_turn(self, kind: str, text: str) -> None:
        role, field = _TURN_EVENTS[kind]
        try:
            said = json.loads(text).get(field)
        except (ValueError, AttributeError):
            return
        if isinstance(said, str) and said.strip():
            conversation = self.record.conversation
            conversation.append(Turn(role, said.strip()))  # type: ignore[arg-type]
            del conversation[
                : max(0, len(conversation) - self.gateway.settings.voice_conversation_max_turns)
            ]
            self._changed()

    def _remember(self, preferences: dict[str, Any]) -> None:
        self.record.preferences.update(preferences)
        self.config = apply_preferences(self.config, preferences)
        self._changed()

    def _changed(self) -> None:
        """The record changed: save it soon, in a task of its own (the relay does not wait)."""
        self._dirty = True
        if self._saving is None or self._saving.done():
            self._saving = asyncio.create_task(self._guard(self._save_while_dirty()))

    async def _save_while_dirty(self) -> None:
        while self._dirty:
            await self._save()

    async def _save(self) -> None:
        self._dirty = False
        self.record.touch()
        await self.gateway.storage.save_session(
            self.record, self.gateway.settings.session_ttl_seconds
        )

    # -- plumbing ---------------------------------------------------------------------------

    async def _send(self, text: str) -> None:
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._client_gone = True
            self._ended.set()

    def flush_counts(self) -> None:
        counts = self._counts
        if counts[0]:
            RELAY_MESSAGES.labels("client_to_engine").inc(counts[0])
            RELAY_BYTES.labels("client_to_engine").inc(counts[1])
        if counts[2]:
            RELAY_MESSAGES.labels("engine_to_client").inc(counts[2])
            RELAY_BYTES.labels("engine_to_client").inc(counts[3])
        self._counts[:] = [0, 0, 0, 0]
