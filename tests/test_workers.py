"""`voicegate serve --workers N` (issue 11): one port, N processes, exact admission, one drain."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.clients import VoiceClient, make_token, open_voice
from tests.redis_server import RedisServer, TLSFiles
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow


def workers_of(server: ServerProcess) -> list[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()]
    # multiprocessing's resource tracker is a child too; the workers run `spawn_main`.
    return [pid for pid in pids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def serving_connections(pid: int, port: int) -> int:
    """Established TCP connections to `port` that process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                count += 1
    return count


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


async def outcome(client: VoiceClient) -> int | str:
    """The type of the first event a connection got, or its close code if it was refused."""
    try:
        client.first = await client.recv()
        return str(client.first["type"])
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006


async def lease_expiries(redis_url: str) -> dict[bytes, float]:
    client = aioredis.from_url(redis_url)
    try:
        expiries: dict[bytes, float] = {}
        async for key in client.scan_iter(match="vg:*:leases"):
            expiries.update(dict(await client.zrange(key, 0, -1, withscores=True)))
        return expiries
    finally:
        await client.aclose()


async def test_two_workers_share_the_port_the_limit_the_figures_and_the_drain(
    redis_server: RedisServer,
) -> None:
    env = {"REDIS_URL": redis_server.url, "VOICE_MAX_CONCURRENT_PER_USER": "100"}
    server = ServerProcess(env, args=("--workers", "2"))
    try:
        server.start(timeout=60)
        workers = workers_of(server)
        assert len(workers) == 2
        # Twelve sessions of one user at once, on whichever worker accepts each: exactly five.
        tries = await asyncio.gather(*(
            open_voice(server, make_token("one-user"), expect_session=False) for _ in range(12)
        ))  # fmt: skip
        outcomes = await asyncio.gather(*(outcome(client) for client in tries))
        assert sorted(outcomes, key=str) == [4029] * 7 + ["gateway.session"] * 5
        admitted = [c for c, o in zip(tries, outcomes, strict=True) if o == "gateway.session"]
        # More users until both workers hold connections (the kernel spreads the accepts).
        others: list[VoiceClient] = []
        async with asyncio.timeout(20):
            while min(serving_connections(pid, server.port) for pid in workers) == 0:
                others.append(await open_voice(server, make_token(f"user-{len(others)}")))
        # One heartbeat per process: every session's lease moves on, on both workers.
        before = await lease_expiries(redis_server.url)
        assert len(before) == len(admitted) + len(others)
        await asyncio.sleep(2.5)  # two heartbeats (1 s each): what is measured is time itself
        after = await lease_expiries(redis_server.url)
        assert all(after[session] > before[session] for session in before)
        # /metrics adds the workers' figures up, whichever worker answers the scrape.
        open_sessions = len(admitted) + len(others)
        for _ in range(4):
            text = httpx.get(f"{server.http}/metrics").text
            assert metric(text, "voicegate_sessions_active") == open_sessions
            assert metric(text, "voicegate_sessions_admitted_total") == open_sessions
        # SIGTERM to the parent drains every worker: `gateway.draining`, then 1001 …
        stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
        for client in admitted + others:
            events = await client.recv_until("gateway.draining")
            assert events[-1]["event_id"]
            assert (await client.closed())[0] == 1001
        assert await stopping in (0, -signal.SIGTERM)
        # … and the sessions resume when the instance is back, none charged again.
        server.start(timeout=60)
        again = await open_voice(server, make_token("one-user"), session_id=admitted[0].session_id)
        assert again.first is not None and again.first["resumed"] is True
        await again.close()
    finally:
        server.close()


def test_several_workers_need_redis() -> None:
    server = ServerProcess({"REDIS_ENABLED": "false"}, args=("--workers", "2"))
    try:
        with pytest.raises(RuntimeError, match="several workers need Redis"):
            server.start(timeout=20)
    finally:
        server.close()


async def test_tls_serves_https_and_wss_on_one_port(tls_files: TLSFiles) -> None:
    args = ("--ssl-certfile", str(tls_files.cert), "--ssl-keyfile", str(tls_files.key))
    server = ServerProcess({"REDIS_ENABLED": "false"}, args=args)
    try:
        with pytest.raises(RuntimeError):  # plain HTTP is not served on a TLS port
            server.start(timeout=5)
        server.stop()
        https = f"https://127.0.0.1:{server.port}"
        context = ssl.create_default_context(cafile=str(tls_files.ca_cert))
        server.start(timeout=20, ready_url=f"{https}/readyz", verify=context)
        assert httpx.get(f"{https}/api/v1/voice/health", verify=context).status_code == 200
        url = f"wss://127.0.0.1:{server.port}/v1/realtime?gateway_events=true"
        async with connect(url, ssl=context, additional_headers={
            "Authorization": f"Bearer {make_token('tls-user')}"}) as ws:  # fmt: skip
            assert '"gateway.session"' in str(await ws.recv())
    finally:
        server.close()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("--ssl-certfile", "/nonexistent.pem", "--ssl-keyfile", "/nonexistent.key"),
            "no such file",
        ),
        (("--ssl-certfile", "/no/cert.pem"), "go together"),
    ],
)
def test_serve_options_are_checked_with_one_clear_line(args: tuple[str, ...], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voicegate", "serve", *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, "REDIS_ENABLED": "false"},
    )  # fmt: skip
    assert done.returncode == 2
    assert said in done.stderr and "Traceback" not in done.stderr
