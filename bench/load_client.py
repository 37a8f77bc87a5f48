"""The relay benchmark's load client, in a process of its own.

    python -m bench.load_client URL --sessions 50 --warmup 2 --window 8 [--gateway]

Opens `--sessions` WebSocket sessions (with `--gateway`, each with its own token minted from
`BENCH_JWT_SECRET`), waits for each one's first event, then every session sends one 20 ms frame
of 24 kHz PCM16 (960 bytes, base64) every 20 ms, at real-time pace, the sessions evenly
staggered across the 20 ms. Each frame's `event_id` carries its send time, so the echoed
`response.output_audio.delta` gives the round trip without any bookkeeping.

Prints `ready` once every session is open, `start` and `stop` at the bounds of the measured
window (the orchestrator reads CPU counters then), and finally one JSON line of results. Only
frames sent inside the window count; frames still unanswered 3 s after it are counted lost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench._loop import run
from bench._stats import summary

FRAME_SECONDS = 0.020
COMPRESSION: str | None = "deflate"
SAMPLE_RATE = 24_000
_SENT_NS = re.compile(r'"event_id"\s*:\s*"t(\d+)"')  # our frames' ids: "t" + send time in ns


def pcm_frame() -> bytes:
    """20 ms of a 440 Hz tone, PCM16 little-endian mono at 24 kHz: 960 bytes."""
    samples = int(SAMPLE_RATE * FRAME_SECONDS)
    return b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)).to_bytes(2, "little", signed=True)
        for i in range(samples)
    )


class Load:
    """Shared state of all sessions: the message template, the window, the measurements."""

    def __init__(self, sessions: int, warmup: float, window: float) -> None:
        audio = base64.b64encode(pcm_frame()).decode()
        self.prefix = '{"type":"input_audio_buffer.append","event_id":"t'
        self.suffix = f'","audio":"{audio}"}}'
        self.sessions = sessions
        self.warmup = warmup
        self.window = window
        self.rtts_ns: list[int] = []
        self.lags: list[float] = []
        self.sent = 0
        self.received = 0
        self.send_errors = 0
        self.errors: list[str] = []
        self.trace: list[tuple[int, int]] | None = None  # (sent after window start, rtt) in ns
        self.start = self.window_start = self.window_end = 0.0
        self.window_start_ns = self.window_end_ns = 0
        self.all_answered = asyncio.Event()

    def schedule(self, start: float) -> None:
        self.start = start
        self.window_start = start + self.warmup
        self.window_end = self.window_start + self.window
        self.window_start_ns = int(self.window_start * 1e9)
        self.window_end_ns = int(self.window_end * 1e9)

    async def send_frames(self, ws: ClientConnection, offset: float) -> None:
        """One frame every 20 ms until the window ends; late wake-ups are recorded as lag."""
        perf_counter, perf_counter_ns = time.perf_counter, time.perf_counter_ns
        prefix, suffix, lags = self.prefix, self.suffix, self.lags
        due = self.start + offset
        end = self.window_end
        lo, hi = self.window_start_ns, self.window_end_ns
        while due < end:
            delay = due - perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now_ns = perf_counter_ns()
            try:
                await ws.send(f"{prefix}{now_ns}{suffix}")
            except ConnectionClosed:
                self.send_errors += 1
                return
            if lo <= now_ns < hi:
                lags.append(now_ns / 1e9 - due)
                self.sent += 1
            due += FRAME_SECONDS

    async def receive_echoes(self, ws: ClientConnection) -> None:
        """Time every echoed frame by the send time in its `event_id`; ignore other events."""
        perf_counter_ns, rtts, search = time.perf_counter_ns, self.rtts_ns, _SENT_NS.search
        lo, hi = self.window_start_ns, self.window_end_ns
        try:
            async for message in ws:
                now_ns = perf_counter_ns()
                text = message if isinstance(message, str) else message.decode()
                match = search(text, 0, 200)
                if match is None:
                    continue
                sent_ns = int(match[1])
                if lo <= sent_ns < hi:
                    rtts.append(now_ns - sent_ns)
                    if self.trace is not None:
                        self.trace.append((sent_ns - lo, now_ns - sent_ns))
                    self.received += 1
                    if self.received >= self.sent and time.perf_counter() > self.window_end:
                        self.all_answered.set()
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must show in the results, not vanish in a task
            self.errors.append(repr(exc))


async def open_session(url: str, semaphore: asyncio.Semaphore) -> ClientConnection:
    async with semaphore:
        ws = await connect(
            url, compression=COMPRESSION, max_size=2**24, ping_interval=None, open_timeout=60
        )
        first = await asyncio.wait_for(ws.recv(), 60)
        if '"error"' in str(first)[:40]:
            raise RuntimeError(f"refused: {str(first)[:200]}")
        return ws


def session_urls(url: str, sessions: int, gateway: bool) -> list[str]:
    if not gateway:
        return [url] * sessions
    from voicegate.auth.tokens import mint_token

    secret = os.environ["BENCH_JWT_SECRET"]
    return [f"{url}?token={mint_token(secret, f'bench-{i}', 'elite')}" for i in range(sessions)]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load = Load(args.sessions, args.warmup, args.window)
    if args.trace:
        load.trace = []
    semaphore = asyncio.Semaphore(20)
    urls = session_urls(args.url, args.sessions, args.gateway)
    opened = await asyncio.gather(*(open_session(u, semaphore) for u in urls))
    print("ready", flush=True)

    load.schedule(time.perf_counter() + 0.2)
    receivers = [asyncio.create_task(load.receive_echoes(ws)) for ws in opened]
    senders = [
        asyncio.create_task(load.send_frames(ws, FRAME_SECONDS * i / args.sessions))
        for i, ws in enumerate(opened)
    ]
    await asyncio.sleep(load.window_start - time.perf_counter())
    cpu_start = os.times()
    print("start", flush=True)
    await asyncio.sleep(load.window_end - time.perf_counter())
    cpu_end = os.times()
    print("stop", flush=True)
    await asyncio.gather(*senders)
    if load.received < load.sent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.all_answered.wait(), 3)
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    for task in receivers:
        task.cancel()

    if args.trace and load.trace is not None:
        Path(args.trace).write_text(json.dumps(sorted(load.trace)))
    rtt_ms = summary(ns / 1e6 for ns in load.rtts_ns)
    lag_ms = summary(lag * 1e3 for lag in load.lags)
    client_cpu = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    return {
        "sessions": args.sessions,
        "window_s": args.window,
        "sent": load.sent,
        "received": load.received,
        "lost": load.sent - load.received,
        "send_errors": load.send_errors,
        "errors": load.errors[:5],
        "rtt_ms": rtt_ms,
        "send_lag_ms": lag_ms,
        "client_cpu_s": client_cpu,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load_client")
    parser.add_argument("url")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--gateway", action="store_true", help="mint a token per session")
    parser.add_argument("--trace", help="write every (send time, round trip) in ns to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = run(main(parse_args(sys.argv[1:])))
    print(json.dumps(result), flush=True)
