"""Processes the benchmarks start, and what they read of them from `/proc`.

Every process listens on 127.0.0.1 on a free port and is stopped by whoever started it (an
`ExitStack` callback), also when a benchmark fails half-way.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.redis_server import RedisServer, free_port
from tests.servers import ServerProcess

__all__ = [
    "API_KEY",
    "JWT_SECRET",
    "Child",
    "RedisServer",
    "ServerProcess",
    "cpu_seconds",
    "free_port",
    "gateway_env",
    "process_tree",
    "rss_bytes",
    "running_gateway",
    "running_redis",
    "runqueue_wait_seconds",
    "tree_cpu_seconds",
]

REPO = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-jwt-secret-0123456789abcdef-0123"
API_KEY = "sk-bench-0123456789abcdef"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (fields 14, 15)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (children, their children, ...), from `/proc/*/stat`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo += children.get(current, [])
    return tree


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of every process of `pid`'s tree, by pid."""
    out = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            out[member] = cpu_seconds(member)
    return out


def runqueue_wait_seconds(pid: int) -> float:
    """Time a process's threads spent ready to run but waiting for a CPU (`schedstat`): how
    much a noisy neighbour delayed it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def gateway_env(redis_url: str | None, *, upstream_url: str | None = None) -> dict[str, str]:
    """The gateway's environment: Redis (or memory when `redis_url` is None), the OpenAI engine
    against `upstream_url` (else the local engine), and limits raised for load."""
    env = {
        "JWT_SECRET": JWT_SECRET,
        "VOICE_RATE_LIMIT": "1000000/hour",
        "VOICE_MAX_CONCURRENT_PER_USER": "100000",
        "REDIS_ENABLED": "true" if redis_url else "false",
        "VOICE_ENGINE": "openai" if upstream_url else "local",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    if upstream_url:
        env["OPENAI_API_KEY"] = API_KEY
        env["OPENAI_REALTIME_URL"] = upstream_url
    return env


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A fresh `redis-server` on a free port, killed on exit."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def running_gateway(env: dict[str, str], workers: int | None = None) -> Iterator[ServerProcess]:
    """A `python -m voicegate serve` process (tests/servers.py), stopped on exit; with
    `workers`, `serve --workers N` (the parent and its N worker processes)."""
    args = ("--workers", str(workers)) if workers is not None else ()
    gateway = ServerProcess(env, args=args)
    members: dict[int, str] = {}
    try:
        gateway.start(timeout=20 if workers is None else 60)
        yield gateway
    finally:
        if gateway.process is not None:  # remember who they are before stopping the parent
            members = {pid: _started(pid) for pid in process_tree(gateway.process.pid)}
        gateway.close()
        _kill_leftovers(members)


def _started(pid: int) -> str:
    """A process's start time (`/proc/<pid>/stat` field 22): with the pid, who it is."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def _kill_leftovers(members: dict[int, str]) -> None:
    """SIGKILL whatever of a stopped server's processes is still there (a worker its parent
    did not take down), checking by start time that the pid still names the same process."""
    for pid, started in members.items():
        if started and _started(pid) == started:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class Child:
    """A `python -m bench.<module>` process talking to us by lines on its stdout (or, with
    `command`, that command, `module` naming it in messages).

    Its stderr goes to a temporary file, shown when it fails.
    """

    def __init__(
        self, module: str, *args: str, env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.module = module
        self._log = Path(tempfile.mkstemp(prefix=f"{module}-", suffix=".log")[1])
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                command or [sys.executable, "-m", module, *args],
                stdout=subprocess.PIPE, stderr=log, cwd=REPO, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_line(self, timeout: float) -> str:
        """The next line the child prints, waiting at most `timeout` seconds."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"{self.module}: no output within {timeout} s:\n{self.log[-3000:]}")
        return line.rstrip("\n")

    def expect(self, word: str, timeout: float) -> None:
        line = self.read_line(timeout)
        if line != word:
            raise RuntimeError(f"{self.module}: expected {word!r}, got {line[:500]!r}")

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def close(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def settle(seconds: float) -> None:
    """Let a process finish what it was doing (start-up, closing connections)."""
    time.sleep(seconds)
