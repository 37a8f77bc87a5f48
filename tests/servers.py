"""A real `voicegate serve` process on a free port, with its log captured for assertions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.redis_server import free_port

TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdef"


class Gateway:
    """`python -m voicegate serve` with the given environment; `stop()`/`start()` restart it."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {
            "JWT_SECRET": TEST_JWT_SECRET,
            "VOICE_ENGINE": "local",
            "RETRY_BASE_DELAY": "0.05",
            "RETRY_MAX_DELAY": "0.5",
            "DRAIN_SECONDS": "2",
            **env,
        }
        self._log = Path(tempfile.mkstemp(prefix="voicegate-", suffix=".log")[1])
        self._logged_before = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws/voice"

    def start(self, timeout: float = 20) -> Gateway:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REDIS_", "VOICE_", "JWT_", "OPENAI_", "SENTRY_", "APP_"))
        }
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "voicegate", "serve", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"voicegate exited {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(f"{self.http}/readyz", timeout=1).status_code == 200:
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
