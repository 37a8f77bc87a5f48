"""A real WebSocket server standing in for the OpenAI Realtime API, for tests and benchmarks.

    async with StandinOpenAI(refuse_first=2) as upstream:
        engine = OpenAIEngine("sk-test-…", url=upstream.url)
        ...
        assert upstream.attempts == 3

It records every connection attempt (path and headers) and every event received, and answers
like the GA Realtime API would, briefly: `session.created` on connect, `session.updated`,
`conversation.item.added|done`, a committed turn with a transcript, a short response. Each
`input_audio_buffer.append` is answered at once with a `response.output_audio.delta` carrying the
same audio and the same `event_id`, without parsing the frame, so benchmarks can match frames.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

_APPEND = re.compile(r'\s*\{\s*"type"\s*:\s*"input_audio_buffer\.append"')
_EVENT_ID = re.compile(r'"event_id"\s*:\s*"([^"\\]*)"')
_AUDIO = re.compile(r'"audio"\s*:\s*"([^"\\]*)"')


@dataclass
class Attempt:
    """One opening handshake, accepted or refused."""

    path: str
    headers: Headers
    refused_with: int | None = None


@dataclass
class UpstreamConnection:
    """One accepted connection and what the client sent on it."""

    path: str
    headers: Headers
    raw_events: list[str] = field(default_factory=list)
    websocket: ServerConnection | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The received events, parsed (audio frames too; tests only)."""
        return [json.loads(raw) for raw in self.raw_events]

    def types(self) -> list[str]:
        return [event.get("type", "") for event in self.events]


class StandinOpenAI:
    """A Realtime-speaking server on 127.0.0.1 and a free port; an async context manager.

    `refuse_first`: answer the first N handshakes with HTTP `refuse_status` (503 by default).
    `valid_key`: refuse any other bearer token with HTTP 401 (`invalid_api_key`).
    `first_error`: accept, then send an `error` event with this code (e.g. `insufficient_quota`)
    instead of `session.created`, and close. `record_appends`: keep append frames (off for
    benchmarks, which send many).
    """

    def __init__(
        self,
        *,
        refuse_first: int = 0,
        refuse_status: int = HTTPStatus.SERVICE_UNAVAILABLE,
        valid_key: str | None = None,
        first_error: str | None = None,
        record_appends: bool = True,
    ) -> None:
        self.refuse_first = refuse_first
        self.refuse_status = refuse_status
        self.valid_key = valid_key
        self.first_error = first_error
        self.record_appends = record_appends
        self.attempts: list[Attempt] = []
        self.connections: list[UpstreamConnection] = []
        self._server: Server | None = None
        self._closing = False
        self._accepted: set[ServerConnection] = set()
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self.url = ""

    async def __aenter__(self) -> StandinOpenAI:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            max_size=None,
            create_connection=self._connection_factory(),
        )
        port = self._server.sockets[0].getsockname()[1] if self._server.sockets else 0
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._closing = True
        self._server.close()
        await self._server.wait_closed()
        for connection in list(self._accepted):
            connection.transport.abort()

    def _connection_factory(self) -> type[ServerConnection]:
        """Connections that the stand-in can close however far they got.

        A gateway reconnecting while the stand-in shuts down can have its socket accepted after
        `Server.close()` went through the connections it knew; that socket would stay open.
        """
        standin = self

        class Connection(ServerConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                standin._accepted.add(self)
                if standin._closing:
                    self.transport.abort()

            def connection_lost(self, exc: Exception | None) -> None:
                standin._accepted.discard(self)
                super().connection_lost(exc)

        return Connection

    # -- what tests call -------------------------------------------------------------------

    async def wait_for_connections(self, count: int, timeout: float = 5.0) -> UpstreamConnection:
        """Wait until `count` connections were accepted; return the last one."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.connections) >= count)
        return self.connections[count - 1]

    async def wait_for_event_count(
        self, count: int, connection: int = -1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until the connection (default: the latest) received `count` recorded events."""

        def enough() -> bool:
            return bool(self.connections) and len(self.connections[connection].raw_events) >= count

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(enough)
        return self.connections[connection].events

    async def wait_for_event(
        self, kind: str, connection: int = -1, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait until the connection (default: the latest) received an event of type `kind`."""

        def found() -> dict[str, Any] | None:
            if not self.connections:
                return None
            for event in self.connections[connection].events:
                if event.get("type") == kind:
                    return event
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        event = found()
        assert event is not None
        return event

    async def close_connections(self, code: int = 1011, reason: str = "stand-in closing") -> None:
        """Close every open connection from the server side, as an upstream outage would."""
        for conn in self.connections:
            if conn.websocket is not None and not conn.closed.is_set():
                await conn.websocket.close(code, reason)

    async def send(self, event: dict[str, Any], connection: int = -1) -> None:
        """Send a server event on a connection (default: the latest)."""
        websocket = self.connections[connection].websocket
        assert websocket is not None
        await websocket.send(json.dumps(event))

    # -- server side -----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        attempt = Attempt(request.path, request.headers)
        self.attempts.append(attempt)
        if len(self.attempts) <= self.refuse_first:
            attempt.refused_with = int(self.refuse_status)
            return connection.respond(HTTPStatus(self.refuse_status), "stand-in refusing\n")
        authorization = request.headers.get("Authorization")
        if self.valid_key is not None and authorization != f"Bearer {self.valid_key}":
            attempt.refused_with = 401
            error = {"type": "invalid_request_error", "code": "invalid_api_key"}
            body = json.dumps({"error": {**error, "message": "Incorrect API key provided."}})
            response = connection.respond(HTTPStatus.UNAUTHORIZED, body)
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        request = websocket.request
        assert request is not None
        conn = UpstreamConnection(request.path, request.headers, websocket=websocket)
        async with self._changed:
            self.connections.append(conn)
            self._changed.notify_all()
        try:
            if self.first_error is not None:
                why = f"stand-in refusing: {self.first_error}"
                error = {"type": self.first_error, "code": self.first_error, "message": why}
                await self._emit(websocket, "error", error=error)
                await websocket.close(1008, self.first_error)
                return
            await self._emit(websocket, "session.created", session={"type": "realtime"})
            async for message in websocket:
                text = message if isinstance(message, str) else message.decode()
                await self._answer(websocket, conn, text)
        except ConnectionClosed:
            pass
        finally:
            conn.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _answer(
        self, websocket: ServerConnection, conn: UpstreamConnection, text: str
    ) -> None:
        if _APPEND.match(text):  # the audio path: answer without parsing, as fast as possible
            if self.record_appends:
                await self._record(conn, text)
            event_id, audio = _EVENT_ID.search(text), _AUDIO.search(text)
            # Both captures hold no quote or backslash, so they go into the JSON as they are.
            eid = event_id[1] if event_id else f"event_{next(self._ids)}"
            await websocket.send(
                f'{{"type":"response.output_audio.delta","event_id":"{eid}",'
                '"response_id":"resp_standin","item_id":"item_standin",'
                f'"output_index":0,"content_index":0,"delta":"{audio[1] if audio else ""}"}}'
            )
            return
        await self._record(conn, text)
        event = json.loads(text)
        kind = event.get("type")
        if kind == "session.update":
            await self._emit(websocket, "session.updated", session=event.get("session"))
        elif kind == "conversation.item.create":
            item = {"id": f"item_{next(self._ids)}", **event.get("item", {})}
            await self._emit(websocket, "conversation.item.added", item=item)
            await self._emit(websocket, "conversation.item.done", item=item)
        elif kind == "input_audio_buffer.commit":
            item_id = f"item_{next(self._ids)}"
            await self._emit(websocket, "input_audio_buffer.committed", item_id=item_id)
            transcribed = "conversation.item.input_audio_transcription.completed"
            heard = {"item_id": item_id, "content_index": 0, "transcript": "stand-in heard you"}
            await self._emit(websocket, transcribed, **heard)
        elif kind == "response.create":
            response_id, item_id = f"resp_{next(self._ids)}", f"item_{next(self._ids)}"
            where = {"response_id": response_id, "item_id": item_id, "output_index": 0}
            await self._emit(websocket, "response.created", response={"id": response_id})
            transcript = {**where, "content_index": 0, "transcript": "stand-in answer"}
            await self._emit(websocket, "response.output_audio_transcript.done", **transcript)
            done = {"id": response_id, "status": "completed"}
            await self._emit(websocket, "response.done", response=done)

    async def _record(self, conn: UpstreamConnection, text: str) -> None:
        async with self._changed:
            conn.raw_events.append(text)
            self._changed.notify_all()

    async def _emit(self, websocket: ServerConnection, kind: str, **fields: Any) -> None:
        event = {"type": kind, "event_id": f"event_{next(self._ids)}", **fields}
        await websocket.send(json.dumps(event, separators=(",", ":")))
