"""Instructions per relayed frame round trip, counted by callgrind: a figure that, unlike CPU
seconds, hardly moves with what else the machine is doing (1 to 2 % from run to run).

    python -m bench.instructions [--frames 10000] [--sessions 10]

The gateway (OpenAI mode, with Redis) and the picows pass-through relay each run under
`valgrind --tool=callgrind`, relaying to the stand-in. A client opens the sessions, warms them
up, then sends `--frames` append frames, one at a time per session (each waits for its echo).
Only what runs inside picows' frame processing is counted (`--toggle-collect`, with the counters
zeroed before the frames and dumped after them): reading a frame, the relay's Python callbacks
and the send that forwards it. Neither the event loop's own work (epoll, timers) nor background
tasks (the gateway's heartbeat, Redis) nor the kernel are in the figure. Both relays' figures
include picows' own parsing and sends, so their difference is what the gateway's own code costs
per round trip (a round trip: one frame each way). Needs `valgrind`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.redis_server import free_port
from websockets.asyncio.client import ClientConnection, connect

from bench._procs import JWT_SECRET, Child, gateway_env, running_redis
from bench.load_client import pcm_frame
from bench.relay import wait_for_port
from voicegate.auth.tokens import mint_token

# picows' handling of the bytes one read brought: frames parsed, callbacks, forwarding sends.
COUNTED = "*WSProtocol__process_new_data*"
WARM_UP = 20  # frames per session before the counters are zeroed


async def _drive(urls: list[str], frames: int, pid: int) -> None:
    audio = base64.b64encode(pcm_frame()).decode()
    sessions = [
        await connect(url, compression=None, ping_interval=None, open_timeout=300) for url in urls
    ]
    for ws in sessions:
        await asyncio.wait_for(ws.recv(), 300)  # the first event: the session is open

    async def round_trips(ws: ClientConnection, count: int) -> None:
        for _ in range(count):
            head = '{"type":"input_audio_buffer.append","event_id":"t'
            await ws.send(f'{head}{time.perf_counter_ns()}","audio":"{audio}"}}')
            while "output_audio.delta" not in str(await ws.recv())[:60]:
                pass

    await asyncio.gather(*(round_trips(ws, WARM_UP) for ws in sessions))
    _callgrind_control("-z", pid)
    await asyncio.gather(*(round_trips(ws, frames // len(sessions)) for ws in sessions))
    _callgrind_control("-d", pid)
    for ws in sessions:
        await ws.close()


def _callgrind_control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def measure(target: str, frames: int, sessions: int) -> int:
    """Instructions per round trip of `target` ("gateway" or "picows")."""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="vg-callgrind-") as out:
        redis = stack.enter_context(running_redis())
        upstream = stack.enter_context(Child("bench.standin")).read_line(20)
        valgrind = [
            "valgrind", "--tool=callgrind", f"--toggle-collect={COUNTED}",
            f"--callgrind-out-file={out}/dump.%p",
        ]  # fmt: skip
        env = dict(os.environ, **gateway_env(redis.url, upstream_url=upstream))
        if target == "gateway":
            port = free_port()
            command = [sys.executable, "-m", "voicegate", "serve", "--port", str(port)]
            urls = [
                f"ws://127.0.0.1:{port}/v1/realtime?token="
                + mint_token(JWT_SECRET, f"instructions-{i}", "elite")
                for i in range(sessions)
            ]
        else:
            command = [sys.executable, "-m", "bench.picows_relay", upstream]
        process = subprocess.Popen(
            [*valgrind, *command], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if target != "gateway":
                url = (process.stdout.readline() if process.stdout else "").strip()
                port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
                urls = [url] * sessions
            wait_for_port(f"ws://127.0.0.1:{port}/", timeout=300)  # callgrind starts slowly
            asyncio.run(_drive(urls, frames, process.pid))
        finally:
            process.terminate()
            process.wait(120)
        dump = Path(out, f"dump.{process.pid}.1").read_text(errors="replace")
    totals = [line for line in dump.splitlines() if line.startswith(("summary:", "totals:"))]
    return int(totals[-1].split()[1]) // (frames // sessions * sessions)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10)
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.frames < args.sessions:
        parser.error("--sessions at least 1, --frames at least --sessions")
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        sys.exit("bench.instructions needs valgrind (Debian: apt-get install valgrind)")
    figures = {}
    for target in ("gateway", "picows"):
        print(f"{target}: {args.frames} round trips under callgrind…", file=sys.stderr, flush=True)
        figures[target] = measure(target, args.frames, args.sessions)
    ratio = figures["gateway"] / figures["picows"]
    print("relay               | instructions per round trip, inside picows' frame processing")
    print("--------------------+-------------------------------------------------------------")
    extra = figures["gateway"] - figures["picows"]
    gateway = f"{figures['gateway']:,} ({ratio:.2f}× the picows relay's, +{extra:,})"
    print(f"voicegate           | {gateway}")
    print(f"picows pass-through | {figures['picows']:,}")


if __name__ == "__main__":
    main()
