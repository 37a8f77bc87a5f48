"""The soak (issue 10): many sessions for many minutes through Redis kills and gateway restarts.

    bench/run --only soak                         # 200 sessions, 10 minutes
    python -m bench soak --sessions 20 --minutes 1 --redis-every 20 --restart-every 30

Everything runs on 127.0.0.1: one `redis-server` with an append-only file (as a production
Redis runs: a kill loses at most the last second), and two `voicegate serve` processes on the
local engine. Gateway A is never restarted: its RSS over the whole run is the "flat?" figure.
Gateway B is restarted every `--restart-every` seconds (SIGTERM: it drains, its clients get
`gateway.draining` and 1001; then it is started again on the same port). Redis is killed with
SIGKILL every `--redis-every` seconds and restarted `--redis-down` seconds later. The two
schedules are offset so that a restart never falls inside a Redis outage (a gateway draining
while Redis is down holds sessions that only its memory knew: the contract does not promise
those).

Each session is a client of its home gateway (half on A, half on B) that sends a turn every
`--turn-seconds` (jittered): 100 ms of PCM16 whose samples are unique to the turn, then
`input_audio_buffer.commit`, and checks that the echoed `response.output_audio.delta` chunks are
the same bytes. When its connection is lost without it closing (1001, a drop, 1011) it
reconnects as contract §4 says: even-numbered clients with their `session_id`, odd ones without
it (the grace resume); a 1013 is retried shortly. A turn whose connection was lost before its
answer is counted as interrupted and sent again after the resume.

Prints the RSS of every process over time, turns sent vs echoed, resumes expected vs done, and
every close code; the figures are also saved as JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.redis_server import redis_server_binary
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench._procs import JWT_SECRET, ServerProcess, free_port, gateway_env, rss_bytes
from voicegate.auth.tokens import mint_token

RESULTS = Path(__file__).resolve().parent / "results"
TURN_AUDIO_SECONDS = 0.1
RESUME_CODES = frozenset({1001, 1006, 1011})  # lost without the client closing it (§4)
TRY_AGAIN = 1013


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def turn_audio(turn: int) -> bytes:
    """100 ms of PCM16 24 kHz, loud enough for the VAD, whose samples say which turn it is."""
    samples = int(24_000 * TURN_AUDIO_SECONDS)
    high = (4000 + turn % 20_000).to_bytes(2, "little", signed=True)
    low = (-(4000 + turn % 20_000)).to_bytes(2, "little", signed=True)
    frame = high * 12 + low * 12
    return (frame * (samples // 24 + 1))[: samples * 2]


class AofRedis:
    """`redis-server` with appendonly on a fixed port; `kill()` is SIGKILL, `start()` again
    reloads the append-only file."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="voicegate-soak-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start within 20 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def close(self, keep_log: Path | None = None) -> None:
        self.kill()
        import shutil

        if keep_log is not None:
            with contextlib.suppress(OSError):
                shutil.copy(os.path.join(self.dir, "redis.log"), keep_log)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Gateway:
    """One `voicegate serve`; `ready` is set while clients may connect to it."""

    name: str
    server: ServerProcess
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0

    @property
    def pid(self) -> int | None:
        return self.server.process.pid if self.server.process is not None else None


@dataclass
class Figures:
    turns_sent: int = 0
    turns_echoed: int = 0
    turns_mismatched: int = 0
    turns_interrupted: int = 0  # the connection was lost before the answer; sent again
    turns_unanswered: int = 0  # no answer within the turn timeout on a live connection
    resumes_expected: int = 0
    resumes_done: int = 0
    resumes_failed: list[str] = field(default_factory=list)
    retries_1013: int = 0
    connect_failures: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.figures = Figures()
        self.stopping = asyncio.Event()
        self.gateways: list[Gateway] = []
        self.redis = AofRedis()
        self.rss: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.started = 0.0
        self._in_flight: set[ClientConnection] = set()

    def at(self) -> float:
        return time.monotonic() - self.started

    def note(self, what: str) -> None:
        self.events.append(f"{self.at():6.0f} s ({time.strftime('%H:%M:%S')})  {what}")
        log(what)

    # -- clients -------------------------------------------------------------------------

    async def client(self, index: int) -> None:
        home = self.gateways[index % len(self.gateways)]
        other = self.gateways[(index + 1) % len(self.gateways)]
        user = f"soak-{index}"
        token = mint_token(JWT_SECRET, user, "elite", ttl=6 * 3600)
        session_id: str | None = None
        must_resume = False
        pending: int | None = None  # a turn sent whose answer never came (connection lost)
        turns = itertools.count(index * 1_000_000)
        rng = random.Random(index)
        await asyncio.sleep(rng.uniform(0, self.args.turn_seconds))  # stagger the starts
        while not self.stopping.is_set():
            gateway = await self._pick(home, other)
            if gateway is None:
                return
            query = {"token": token}
            if must_resume and session_id is not None and (index // 2) % 2 == 0:
                query["session_id"] = session_id
            try:
                ws = await connect(
                    f"{gateway.server.ws}?{urlencode(query)}", open_timeout=15, max_size=2**24
                )
            except (OSError, InvalidHandshake, TimeoutError):
                self.figures.connect_failures += 1
                await asyncio.sleep(0.5)
                continue
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if first.get("type") != "gateway.session":
                    self.figures.unexpected[f"first event {first.get('type')}"] += 1
                    await ws.close()
                    continue
                if must_resume:
                    if first.get("resumed") is True and first.get("session_id") == session_id:
                        self.figures.resumes_done += 1
                    else:
                        self.figures.resumes_failed.append(
                            f"{user} on {gateway.name} at {self.at():.0f} s: got "
                            f"resumed={first.get('resumed')} for "
                            f"{'the same' if first.get('session_id') == session_id else 'a new'} id"
                        )
                must_resume = False
                session_id = str(first["session_id"])
                while not self.stopping.is_set():
                    turn = pending if pending is not None else next(turns)
                    pending = turn
                    await self._turn(ws, turn)
                    pending = None
                    with contextlib.suppress(TimeoutError):
                        delay = self.args.turn_seconds * rng.uniform(0.5, 1.5)
                        await asyncio.wait_for(self.stopping.wait(), delay)
                await ws.close()  # the end of the soak: the client closes, the session ends
                return
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else 1006
                self.figures.closes[code] += 1
                if ws in self._in_flight:  # sent, not answered: sent again after the resume
                    self._in_flight.discard(ws)
                    self.figures.turns_interrupted += 1
                if code == TRY_AGAIN:
                    self.figures.retries_1013 += 1
                    await asyncio.sleep(0.5)
                elif code in RESUME_CODES:
                    if not must_resume:
                        self.figures.resumes_expected += 1
                    must_resume = session_id is not None
                else:
                    reason = closed.rcvd.reason if closed.rcvd is not None else ""
                    self.figures.unexpected[f"close {code} {reason}"] += 1
                    session_id, must_resume = None, False
                    await asyncio.sleep(1)
            except TimeoutError:
                self.figures.unexpected["no gateway.session within 15 s"] += 1
                await ws.close()

    async def _pick(self, home: Gateway, other: Gateway) -> Gateway | None:
        """The home gateway once it is ready (it restarts within seconds), else the other."""
        for gateway, wait in ((home, 30.0), (other, 30.0)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gateway.ready.wait(), wait)
                return gateway
            if self.stopping.is_set():
                return None
        return None if self.stopping.is_set() else home

    async def _turn(self, ws: ClientConnection, turn: int) -> None:
        audio = turn_audio(turn)
        # GA events: the original front-end's `audio.input` would switch the connection to
        # beta event names.
        append = {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
        await ws.send(json.dumps(append))
        await ws.send('{"type":"input_audio_buffer.commit"}')
        self.figures.turns_sent += 1
        self._in_flight.add(ws)
        echoed = bytearray()
        try:
            async with asyncio.timeout(self.args.turn_timeout):
                while True:
                    event = json.loads(await ws.recv())
                    kind = event.get("type")
                    if kind == "response.output_audio.delta":
                        echoed += base64.b64decode(event["delta"])
                    elif kind == "response.done":
                        break
                    elif kind == "error":
                        self.figures.unexpected[f"error event {event['error'].get('code')}"] += 1
        except TimeoutError:
            self.figures.turns_unanswered += 1
            return
        finally:
            self._in_flight.discard(ws)
        if bytes(echoed) == audio:
            self.figures.turns_echoed += 1
        else:
            self.figures.turns_mismatched += 1
            self.figures.unexpected[f"echo of {len(echoed)} bytes for {len(audio)}"] += 1

    # -- faults ----------------------------------------------------------------------------

    async def redis_kills(self) -> None:
        every, down = self.args.redis_every, self.args.redis_down
        for k in itertools.count():
            await self._until(every / 2 + k * every)
            if self.stopping.is_set():
                return
            self.note(f"Redis: SIGKILL (restarted in {down:.0f} s)")
            self.redis.kill()
            await self._sleep(down)
            await asyncio.to_thread(self.redis.start)
            self.note("Redis: started again (append-only file reloaded)")

    async def gateway_restarts(self) -> None:
        gateway = self.gateways[1]
        for k in itertools.count(1):
            await self._until(k * self.args.restart_every)
            if self.stopping.is_set():
                return
            gateway.ready.clear()
            self.note(f"gateway {gateway.name}: SIGTERM (drain)")
            code = await asyncio.to_thread(gateway.server.stop, signal.SIGTERM, 30)
            await asyncio.to_thread(gateway.server.start, 30)
            gateway.restarts += 1
            gateway.ready.set()
            self.note(f"gateway {gateway.name}: exited {code}, started again")

    async def sample_rss(self) -> None:
        while not self.stopping.is_set():
            sample: dict[str, Any] = {"t": round(self.at())}
            for gateway in self.gateways:
                pid = gateway.pid
                with contextlib.suppress(OSError, RuntimeError):
                    sample[gateway.name] = rss_bytes(pid) if pid else None
            if self.redis.process is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    sample["redis"] = rss_bytes(self.redis.process.pid)
            sample["turns"] = self.figures.turns_echoed
            self.rss.append(sample)
            await self._sleep(self.args.sample_seconds)

    async def _until(self, at: float) -> None:
        """Sleep until `at` seconds into the run (fixed schedules: no drift)."""
        await self._sleep(at - self.at())

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        args = self.args
        self.redis.start()
        env = {
            **gateway_env(self.redis.url),
            "VOICE_MAX_SESSION_SECONDS": str(int(args.minutes * 60 + 600)),
            "DRAIN_SECONDS": "5",
        }
        for name in ("A", "B"):
            server = await asyncio.to_thread(ServerProcess(env).start, 30)
            gateway = Gateway(name, server)
            gateway.ready.set()
            self.gateways.append(gateway)
        self.started = time.monotonic()
        ports = ", ".join(str(g.server.port) for g in self.gateways)
        log(
            f"{args.sessions} sessions, {args.minutes:g} min; "
            f"gateways {ports}, Redis {self.redis.port}"
        )
        clients = [asyncio.create_task(self.client(i)) for i in range(args.sessions)]
        chores = [
            asyncio.create_task(self.sample_rss()),
            asyncio.create_task(self.redis_kills()),
            asyncio.create_task(self.gateway_restarts()),
        ]
        await self._sleep(args.minutes * 60)
        self.stopping.set()
        for gateway in self.gateways:  # a client waiting for a gateway must not wait on
            gateway.ready.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*chores)
            await asyncio.gather(*clients)

    def close(self, stamp: str) -> None:
        """Stop everything; the logs stay in bench/results/ for a post-mortem."""
        RESULTS.mkdir(exist_ok=True)
        for gateway in self.gateways:
            gateway.server.stop(signal.SIGTERM, 30)
            with contextlib.suppress(OSError):
                path = RESULTS / f"soak-{stamp}-gateway-{gateway.name}.log"
                path.write_text(gateway.server.log)
        self.redis.close(keep_log=RESULTS / f"soak-{stamp}-redis.log")

    def server_errors(self) -> dict[str, int]:
        """Tracebacks and ERROR lines in each gateway's log (all its lives), but the contract's
        `❌ Redis connection failed` line, which every Redis kill is meant to produce."""
        out = {}
        for gateway in self.gateways:
            lines = gateway.server.log.splitlines()
            out[gateway.name] = sum(
                1
                for line in lines
                if line.startswith("Traceback")
                or (" ERROR " in line and "❌ Redis connection failed" not in line)
            )
        return out

    def redis_failures(self) -> dict[str, list[str]]:
        """When each gateway logged `❌ Redis connection failed` (seconds into the run)."""
        out: dict[str, list[str]] = {}
        for gateway in self.gateways:
            out[gateway.name] = [
                line[11:19] for line in gateway.server.log.splitlines()
                if "❌ Redis connection failed" in line
            ]  # fmt: skip
        return out

    def report(self) -> dict[str, Any]:
        f = self.figures
        return {
            "sessions": self.args.sessions,
            "minutes": self.args.minutes,
            "rss": self.rss,
            "events": self.events,
            "gateway_b_restarts": self.gateways[1].restarts,
            "turns_sent": f.turns_sent,
            "turns_echoed": f.turns_echoed,
            "turns_mismatched": f.turns_mismatched,
            "turns_interrupted": f.turns_interrupted,
            "turns_unanswered": f.turns_unanswered,
            "resumes_expected": f.resumes_expected,
            "resumes_done": f.resumes_done,
            "resumes_failed": f.resumes_failed,
            "retries_1013": f.retries_1013,
            "connect_failures": f.connect_failures,
            "closes": dict(sorted(f.closes.items())),
            "unexpected": dict(f.unexpected),
            "server_errors": self.server_errors(),
            "redis_failures_logged": self.redis_failures(),
        }


def _mb(value: int | None) -> str:
    return f"{value / 2**20:7.1f}" if value else "      -"


def render(report: dict[str, Any]) -> str:
    lines = [f"soak: {report['sessions']} sessions, {report['minutes']:g} min", ""]
    lines.append("RSS over time (MB; A never restarted, B restarted, Redis killed):")
    lines.append("   t (s)        A        B    Redis   turns echoed")
    rss = report["rss"]
    step = max(1, len(rss) // 20)
    for sample in [*rss[::step], *([rss[-1]] if rss and (len(rss) - 1) % step else [])]:
        lines.append(
            f"  {sample['t']:6d}  {_mb(sample.get('A'))}  {_mb(sample.get('B'))}  "
            f"{_mb(sample.get('redis'))}   {sample['turns']:>10d}"
        )
    a = [s["A"] for s in rss if s.get("A")]
    if len(a) >= 4:
        settled = a[len(a) // 4]  # after the first quarter: every session open, caches warm
        lines.append(
            f"  A: {settled / 2**20:.1f} MB after the first quarter, {a[-1] / 2**20:.1f} MB at "
            f"the end ({(a[-1] - settled) / 2**20:+.1f} MB), max {max(a) / 2**20:.1f} MB"
        )
    lines += ["", "faults:", *(f"  {e}" for e in report["events"]), ""]
    lost = (
        report["turns_sent"] - report["turns_echoed"] - report["turns_interrupted"]
        - report["turns_mismatched"] - report["turns_unanswered"]
    )  # fmt: skip
    lines += [
        f"turns sent {report['turns_sent']}, echoed byte for byte {report['turns_echoed']}, "
        f"interrupted by a lost connection and sent again {report['turns_interrupted']}, "
        f"echoed wrong {report['turns_mismatched']}, unanswered {report['turns_unanswered']}, "
        f"unaccounted {lost}",
        f"resumes expected {report['resumes_expected']}, resumed (same session) "
        f"{report['resumes_done']}, not resumed {len(report['resumes_failed'])}",
        *(f"  not resumed: {line}" for line in report["resumes_failed"][:20]),
        f"1013 retries {report['retries_1013']}, connection attempts refused while a gateway "
        f"restarted {report['connect_failures']}",
        f"close codes seen by clients: {report['closes'] or 'none'}",
        f"unexpected: {report['unexpected'] or 'none'}",
        f"server tracebacks/ERROR lines (but Redis failures): {report['server_errors']}",
        f"`❌ Redis connection failed` logged at: {report['redis_failures_logged']}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--turn-seconds", type=float, default=3.0, help="mean time between turns")
    parser.add_argument("--turn-timeout", type=float, default=30.0)
    parser.add_argument("--redis-every", type=float, default=120.0, help="seconds between kills")
    parser.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis stays down")
    parser.add_argument("--restart-every", type=float, default=120.0, help="seconds, gateway B")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench._loop import run as run_async

    args = parse_args(argv)
    soak = Soak(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        run_async(soak.run())
    finally:
        soak.close(stamp)
    report = soak.report()
    print(render(report), flush=True)
    path = RESULTS / f"soak-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"\nraw figures in {path}; the gateways' and Redis's logs beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
