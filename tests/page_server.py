"""A static HTTP server for the test pages in `tests/pages/`, on a free port of its own.

The pages are the test's, not the package's: a front-end served from its own origin, as in a
real deployment, talking to the gateway at another one.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.redis_server import free_port

PAGES = Path(__file__).parent / "pages"


class PageServer:
    """`async with PageServer() as pages: pages.url("legacy_hook.html")`."""

    def __init__(self, root: Path = PAGES) -> None:
        self.root = root
        self.port = free_port()
        self._server: asyncio.Server | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def __aenter__(self) -> PageServer:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            name = target.partition("?")[0].lstrip("/")
            page = self.root / name
            if method == "GET" and "/" not in name and name.endswith(".html") and page.is_file():
                status, kind, body = "200 OK", "text/html; charset=utf-8", page.read_bytes()
            else:
                status, kind, body = "404 Not Found", "text/plain", b"not found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # not a request this server answers: just close
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
