"""A real HTTP server standing in for Sentry: it receives what the SDK sends, for assertions.

    with SentryStandin() as sentry:
        gateway = ServerProcess({"SENTRY_DSN": sentry.dsn}).start()
        ...
        event = await sentry.wait_for_async(lambda e: e.get("level") == "error")

sentry-sdk posts envelopes to `/api/<project>/envelope/` (gzip- or brotli-compressed; deflate
is accepted too): one JSON header line, then items, each a JSON header line (with `length`, or
up to the next newline) and its payload. Every body is kept decompressed (`raw_text()`) so a test
can scan everything that left the process, and every item is parsed. `response_delay` holds
each answer back, as a slow Sentry would: the SDK sends one envelope at a time, so the next ones
wait in its queue, where only a flush at shutdown gets them out. `status`, `headers` and `body`
make it answer as a Sentry that refuses (403 with a `detail`, 429 with `Retry-After`); what it
refused is kept all the same.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Item:
    """One envelope item: its type (`event`, `transaction`, `client_report`, …) and payload."""

    type: str
    headers: dict[str, Any]
    payload: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload)
        return data


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[Item]]:
    """The envelope header and its items (the format of develop.sentry.dev/sdk/envelopes)."""
    first, _, rest = body.partition(b"\n")
    header: dict[str, Any] = json.loads(first)
    items: list[Item] = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        item_header: dict[str, Any] = json.loads(line)
        length = item_header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:].removeprefix(b"\n")
        items.append(Item(str(item_header.get("type", "")), item_header, payload))
    return header, items


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]  # only when the SDK found it too

        data: bytes = brotli.decompress(body)
        return data
    if encoding in ("", "identity"):
        return body
    raise ValueError(f"unknown Content-Encoding {encoding!r}")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up waiting
            super().handle_error(request, client_address)


class SentryStandin:
    """A threaded HTTP server on 127.0.0.1 and a free port; a context manager."""

    def __init__(
        self,
        project: str = "1",
        response_delay: float = 0.0,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: bytes = b"{}",
    ) -> None:
        self.project = project
        self.response_delay = response_delay
        self.status, self.headers, self.body = status, headers or {}, body
        self.bodies: list[bytes] = []
        self.items: list[Item] = []
        self.bad_requests: list[str] = []
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def dsn(self) -> str:
        assert self._server is not None
        return f"http://publickey@127.0.0.1:{self._server.server_address[1]}/{self.project}"

    def __enter__(self) -> SentryStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if self.path.rstrip("/") != f"/api/{standin.project}/envelope":
                        raise ValueError(f"unexpected path {self.path}")
                    encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
                    standin._received(_decompress(body, encoding))
                except ValueError as exc:  # also json and zlib errors
                    standin.bad_requests.append(str(exc))
                    status, headers, answer = 400, {}, b"{}"
                else:
                    standin._closing.wait(standin.response_delay)
                    status, headers, answer = standin.status, standin.headers, standin.body
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows failures, not every POST

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _received(self, body: bytes) -> None:
        _, items = parse_envelope(body)
        with self._changed:
            self.bodies.append(body)
            self.items.extend(items)
            self._changed.notify_all()

    # -- what tests call -------------------------------------------------------------------

    def payloads(self, kind: str = "event") -> list[dict[str, Any]]:
        """The parsed payloads of every item of type `kind` received so far."""
        with self._changed:
            return [item.json() for item in self.items if item.type == kind]

    def raw_text(self) -> str:
        """Everything received, decompressed, as one text to scan for secrets."""
        with self._changed:
            return b"\n".join(self.bodies).decode("utf-8", "replace")

    def wait_for(
        self, predicate: Predicate, kind: str = "event", timeout: float = 10
    ) -> dict[str, Any]:
        """The first item of type `kind` matching `predicate`, waiting up to `timeout` s."""

        def found() -> dict[str, Any] | None:
            return next((p for p in self.payloads(kind) if predicate(p)), None)

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                seen = [_summary(p) for p in self.payloads(kind)]
                raise AssertionError(f"no matching {kind} within {timeout} s; received {seen}")
        match = found()
        assert match is not None
        return match

    async def wait_for_async(
        self, predicate: Predicate, kind: str = "event", timeout: float = 10
    ) -> dict[str, Any]:
        """`wait_for` without blocking the event loop (WebSocket clients keep running)."""
        return await asyncio.to_thread(self.wait_for, predicate, kind, timeout)


def event_message(event: dict[str, Any]) -> str:
    """The text of an event: its log message, else its exception's."""
    logentry = event.get("logentry") or {}
    text = logentry.get("formatted") or logentry.get("message") or event.get("message") or ""
    for exc in (event.get("exception") or {}).get("values") or []:
        text += f" {exc.get('type')}: {exc.get('value')}"
    return str(text)


def _summary(payload: dict[str, Any]) -> str:
    return payload.get("transaction") or event_message(payload) or str(payload.get("type"))
