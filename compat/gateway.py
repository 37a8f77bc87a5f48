"""Real `voicegate serve` processes for the clients: plain and TLS, local engine, defaults.

Each server runs with the defaults a developer gets (rate limit, concurrency cap, the fields a
client may set), except: the local engine, memory storage (no Redis to start), and a JWT
secret made for the run. It runs in the run's own directory, so a developer's `.env` (an
OpenAI key, say) does not reach it, and its log is kept there.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from voicegate.auth import mint_token

__all__ = ["Gateway", "GatewayError", "start_gateway"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
JWT_SECRET = secrets.token_hex(32)  # this run's; never printed


class GatewayError(Exception):
    """A server did not start; the message says why (with the tail of its log)."""


@dataclass
class Gateway:
    """One running `voicegate serve`."""

    port: int
    log: Path
    process: subprocess.Popen[bytes]
    ca: Path | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    def token(self, user: str) -> str:
        """A client JWT for `user` on an allowed plan, as `voicegate token` makes it."""
        return mint_token(JWT_SECRET, user, "elite", email=f"{user}@compat.invalid")

    def client_secret(self, user: str) -> str:
        """An ephemeral `ek_…` for `user`, from `POST /v1/realtime/client_secrets`."""
        with httpx.Client(verify=self._verify(), timeout=10) as http:
            response = http.post(
                f"{self.http}/v1/realtime/client_secrets",
                headers={"Authorization": f"Bearer {self.token(user)}"},
                json={"expires_after": {"anchor": "created_at", "seconds": 600}},
            )
        if response.status_code != 200:
            raise GatewayError(f"client_secrets answered {response.status_code}")
        value = response.json()["value"]
        assert isinstance(value, str)
        return value

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> int | None:
        """SIGTERM (the server drains) and wait; its exit code, None if it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode

    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True


def start_gateway(
    run_dir: Path,
    name: str,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Gateway:
    """Start `voicegate serve` on a free port and wait until `/readyz` answers 200;
    `settings` are voicegate variables on top of the suite's."""
    port = _free_port()
    log = run_dir / f"gateway-{name}.log"
    args = [sys.executable, "-m", "voicegate", "serve", "--port", str(port)]
    if cert and key:
        args += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(run_dir)),
        "LANG": "C.UTF-8",
        "VOICE_ENGINE": "local",
        "REDIS_ENABLED": "false",
        "JWT_SECRET": JWT_SECRET,
        "DRAIN_SECONDS": "2",
        **(settings or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=run_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    gateway = Gateway(port, log, process, ca)
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(verify=gateway._verify(), timeout=2) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise GatewayError(f"{name} server exited with {process.returncode}:\n"
                                   f"{gateway.log_tail()}")  # fmt: skip
            try:
                if http.get(f"{gateway.http}/readyz").status_code == 200:
                    return gateway
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling the probe: the server offers no other readiness signal
    gateway.stop()
    raise GatewayError(
        f"{name} server not ready within {START_TIMEOUT:.0f} s:\n{gateway.log_tail()}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
