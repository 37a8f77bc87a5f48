"""Real voicegate servers for tests.

`ServerProcess` is `voicegate serve` in a process of its own, with its log captured: for what a
process must be for (crash, drain, restart, several instances, the command line).
`InProcessServer` is the same app and the same transports (uvicorn with voicegate's HTTP and
picows WebSocket protocols) on a free port in the test's own event loop: for admission and
protocol cases, which then start in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from tests.redis_server import free_port
from voicegate.app import create_app
from voicegate.config import Settings
from voicegate.ops.logs import MaskingFormatter
from voicegate.server.run import uvicorn_config

TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdef"

# What a test server starts with unless told otherwise (as settings; as environment variables
# for a process).
BASE_SETTINGS: dict[str, object] = {
    "jwt_secret": TEST_JWT_SECRET,
    "voice_engine": "local",
    "retry_base_delay": 0.05,
    "retry_max_delay": 0.5,
    "drain_seconds": 2,
}

# Settings come from the environment too: nothing of this machine's may reach a test's server.
_SETTINGS_PREFIXES = ("REDIS_", "VOICE_", "JWT_", "OPENAI_", "SENTRY_", "APP_", "PLAN_", "HTTP_",
                      "LOG_")  # fmt: skip
_SETTINGS_NAMES = ("ENABLE_VOICE_REALTIME", "WEAVIATE_URL")


def is_setting(name: str) -> bool:
    """Whether environment variable `name` configures voicegate."""
    return name.startswith(_SETTINGS_PREFIXES) or name in _SETTINGS_NAMES


def clean_environment(**env: str) -> dict[str, str]:
    """This process's environment without voicegate's settings, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if not is_setting(k)}, **env}


class _Addresses:
    """Where a server on 127.0.0.1:`port` answers."""

    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws/voice"

    @property
    def realtime(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


class ServerProcess(_Addresses):
    """`python -m voicegate serve` with the given environment; `stop()`/`start()` restart it."""

    def __init__(
        self, env: dict[str, str], port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.port = port or free_port()
        self.args = args
        self.env = {**{k.upper(): str(v) for k, v in BASE_SETTINGS.items()}, **env}
        self._log = Path(tempfile.mkstemp(prefix="voicegate-", suffix=".log")[1])
        self._logged_before = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self,
        timeout: float = 20,
        *,
        ready_url: str | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> ServerProcess:
        env = clean_environment(**self.env, PYTHONUNBUFFERED="1")
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "voicegate", "serve", "--port", str(self.port), *self.args],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"voicegate exited {self.process.returncode}:\n{self.log}")
            try:
                ready = ready_url or f"{self.http}/readyz"
                if httpx.get(ready, timeout=1, verify=verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"voicegate not ready within {timeout} s:\n{self.log}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Stop the process (SIGTERM drains; SIGKILL is a crash) and return its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=5)
        self.process = None
        return code

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.log}")

    def health(self) -> dict[str, object]:
        response = httpx.get(f"{self.http}/api/v1/voice/health", timeout=5)
        assert response.status_code == 200
        data: dict[str, object] = response.json()
        return data

    def close(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)


class QuietServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the test runner keeps Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ServerLog(logging.Handler):
    """What an in-process server logs, as `voicegate serve` would write it.

    `configure_logging` is process-wide (it replaces the root logger's handlers), so it is not
    called here; instead, while the server runs, its records go through the same
    `MaskingFormatter` with the same secrets, and the same levels apply: voicegate's and uvicorn's
    loggers at LOG_LEVEL, every other logger from WARNING up. Assertions on what a log shows (or
    must never show) see what the process's stderr would.
    """

    _OURS = ("voicegate", "uvicorn")

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.setFormatter(MaskingFormatter(settings.secret_values(), settings.log_format == "json"))
        self._level = logging.getLevelName(settings.log_level)
        self._lines: list[str] = []
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._saved: list[tuple[logging.Logger, int]] = []

    def __enter__(self) -> ServerLog:
        for name in self._OURS:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level))
            logger.setLevel(self._level)
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger().removeHandler(self)
        for logger, level in self._saved:
            logger.setLevel(level)

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name.split(".", 1)[0] in self._OURS
        if record.levelno < (self._level if ours else logging.WARNING):
            return
        self._lines.append(self.format(record))
        # Records may come from other threads (`asyncio.to_thread`, the default executor).
        self._loop.call_soon_threadsafe(self._changed.set)

    @property
    def text(self) -> str:
        return "".join(f"{line}\n" for line in self._lines)

    async def wait_for(self, text: str, timeout: float = 10) -> None:
        try:
            async with asyncio.timeout(timeout):
                while text not in self.text:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.text}") from None


class InProcessServer(_Addresses):
    """The app on a free port in the running event loop; an async context manager.

    The app is built on entering, so that what its construction logs (Sentry's line, the
    ephemeral JWT secret) is in `log`.
    """

    app: FastAPI

    def __init__(self, **settings: object) -> None:
        self.port = free_port()
        self.settings = Settings(_env_file=None, **{**BASE_SETTINGS, **settings})  # type: ignore[call-arg]
        self._log: ServerLog | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def log(self) -> str:
        """Every line logged since the server was entered (masked, as the process writes it)."""
        assert self._log is not None, "the server has not been started"
        return self._log.text

    async def wait_for_log(self, text: str, timeout: float = 10) -> None:
        assert self._log is not None, "the server has not been started"
        await self._log.wait_for(text, timeout)

    async def health(self) -> dict[str, object]:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{self.http}/api/v1/voice/health")
        assert response.status_code == 200
        data: dict[str, object] = response.json()
        return data

    async def __aenter__(self) -> InProcessServer:
        self._log = ServerLog(self.settings).__enter__()
        try:
            self.app = create_app(self.settings)
            config = uvicorn_config(self.settings, "127.0.0.1", self.port, app=self.app)
            self.server = QuietServer(config)
            self._task = asyncio.create_task(self.server.serve())
            async with asyncio.timeout(10):
                while not self.server.started:
                    if self._task.done():
                        self._task.result()  # raises what stopped it
                        raise RuntimeError("the server stopped during start-up")
                    await asyncio.sleep(0.01)
        except BaseException:
            with contextlib.suppress(Exception):  # what failed the start-up is what to show
                await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._task is not None:
                self.server.should_exit = True
                async with asyncio.timeout(15):
                    await self._task
        finally:
            if self._log is not None:
                self._log.__exit__()


# What the `serve` and `server_factory` fixtures hand a test.
Serve = Callable[..., Awaitable[InProcessServer]]
GatewayFactory = Callable[..., ServerProcess]
