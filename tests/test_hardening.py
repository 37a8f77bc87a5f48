"""Hostile and broken clients (issue 10): bounded memory and sockets, prompt answers.

Where memory or sockets are read from the server's /proc, the server is a `ServerProcess` of
its own; the other cases run in process (`serve`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.clients import b64, make_token, open_voice, pcm
from tests.servers import Serve, ServerProcess

Factory = Callable[..., ServerProcess]
MB = 1024 * 1024


def rss(server: ServerProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def open_fds(server: ServerProcess) -> int:
    assert server.process is not None
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


async def raw_request(port: int, data: bytes, *, read: bool = True) -> bytes:
    """Send raw bytes on a fresh TCP connection; what the server answers before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10) if read else b""
    finally:
        writer.close()


async def test_unfinished_heads_cost_bounded_memory_and_are_timed_out(
    server_factory: Factory,
) -> None:
    server = server_factory({"REDIS_ENABLED": "false", "HTTP_HEAD_TIMEOUT_SECONDS": "2"})
    before, fds_before = rss(server), open_fds(server)
    # 20 connections each sending 5 MB of one endless header, 50 an unfinished request line.
    writers = []
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (5 * MB))
        writers.append(writer)
    for _ in range(50):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/v1/voice/health?x=")
        writers.append(writer)
    await asyncio.gather(*(w.drain() for w in writers), return_exceptions=True)
    grown = rss(server) - before
    assert grown < 20 * MB, f"server grew by {grown / MB:.1f} MB"
    # The head timeout closes every one of them.
    async with asyncio.timeout(10):
        while open_fds(server) > fds_before + 2:
            await asyncio.sleep(0.1)
    for writer in writers:
        writer.close()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MB + b"\r\n\r\n", b"431"),
        (
            b"GET /livez HTTP/1.1\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(2000))
            + b"\r\n",
            b"431",
        ),
        (
            b"GET /api/v1/ws/voice?token=" + b"t" * (40 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"414",
        ),
    ],
)
async def test_oversized_heads_are_refused_at_once(
    serve: Serve, head: bytes, status: bytes
) -> None:
    server = await serve(redis_enabled=False)
    answer = await raw_request(server.port, head)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]


async def test_a_long_token_in_the_url_gets_an_answer_at_once(serve: Serve) -> None:
    # A ~9.5 KB token: longer than websockets' 8 KB line, well within the head bound.
    server = await serve(redis_enabled=False)
    token = make_token("long", padding="p" * 9000)
    client = await open_voice(server, token)
    assert client.first is not None and client.first["resumed"] is False
    await client.close()


async def test_a_client_that_reads_nothing_is_closed_and_costs_bounded_memory(
    server_factory: Factory,
) -> None:
    server = server_factory({
        "REDIS_ENABLED": "false", "VOICE_SLOW_CLIENT_SECONDS": "3",
        "VOICE_CLIENT_BUFFER_BYTES": str(256 * 1024),
    })  # fmt: skip
    before = rss(server)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET /api/v1/ws/voice?token={make_token('mute')} HTTP/1.1\r\nHost: x\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    frame = _masked_text(b'{"type":"response.create"}')
    sock.settimeout(0.5)
    sent = 0
    for _ in range(20_000):  # the server stops reading us once its buffer toward us is full
        try:
            sock.sendall(frame)
            sent += 1
        except (TimeoutError, BlockingIOError, OSError):
            break
    grown = rss(server) - before
    assert grown < 30 * MB, f"server grew by {grown / MB:.1f} MB after {sent} messages"
    # Closed within the slow-client bound (the close frame may not get through: we don't read).
    sock.settimeout(None)
    async with asyncio.timeout(15):
        while True:
            await asyncio.sleep(0.2)
            if "1008" in server.log or "not reading" in server.log:
                break
    sock.close()


def _masked_text(payload: bytes) -> bytes:
    """A client text frame (masked with a zero key, which leaves the payload as it is)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def test_binary_frame_over_the_limit_is_1009(serve: Serve) -> None:
    server = await serve(redis_enabled=False, voice_max_message_bytes=4096)
    client = await open_voice(server, make_token())
    await client.send(b"\0" * 5000)
    code, reason = await client.closed()
    assert code == 1009 and "4096" in reason


async def test_small_binary_frames_get_an_error_and_the_session_goes_on(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    client = await open_voice(server, make_token())
    await client.send(b"\x01\x02")
    error = (await client.recv_until("error"))[-1]
    assert error["error"]["code"] == "binary_frame"
    await client.send({"type": "audio.input", "audio": b64(pcm(0.1))})
    await client.send(json.dumps({"type": "input_audio_buffer.commit"}))
    assert (await client.recv_until("response.done"))[-1]["type"] == "response.done"
    await client.close()
