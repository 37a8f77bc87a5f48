"""`voicegate verify --long`: one session held with audio turns, against real gateways.

Where the test reads the gateway's absolute /metrics figures it runs `voicegate serve` in a
process of its own (prometheus-client's registry is process-wide); the others run in process.
"""

from __future__ import annotations

import asyncio
import io
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from tests.redis_server import RedisServer
from tests.servers import TEST_JWT_SECRET, GatewayFactory, Serve
from tests.test_metrics import scrape
from tests.test_verify import assert_nothing_secret, checklist, verify_process
from voicegate.cli import _parser
from voicegate.cli import verify as verify_command
from voicegate.ops import metrics

LONG_LINE = re.compile(
    r"✅ Long session: 0:0\d in one session, (\d+) turns, each echoed byte for byte "
    r"\(first audio median \d+ ms, max \d+ ms\); no session.timeout \(cap 1800 s\); "
    r"shorter than the guide's 10 minutes$"
)


async def test_long_session_holds_one_session_and_checks_every_turn(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url})
    started = time.monotonic()
    done = await verify_process(
        gateway.http, "--jwt-secret", TEST_JWT_SECRET, "--long", "0.05", "--turn-every", "0.5"
    )  # 3 s: a turn at the start, every 0.5 s, and one at the end
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started > 3
    checks = checklist(done.stdout)
    assert list(checks) == ["Health", "Ready", "Voice session", "Resume", "Long session"]
    line = LONG_LINE.match(checks["Long session"])
    assert line is not None, checks["Long session"]
    assert 5 <= int(line[1]) <= 8, checks["Long session"]
    # Not a terminal: plain progress lines, none rewritten in place.
    progress = [row for row in done.stdout.splitlines() if row.startswith("⏳ Long session: ")]
    assert progress and "\r" not in done.stdout, done.stdout
    assert re.fullmatch(r"⏳ Long session: 0:0\d / 0:03, \d+ turns?, last \d+ ms", progress[-1])
    m = await scrape(gateway)
    assert m["voicegate_sessions_admitted_total"] == 2  # the voice check's, and one held
    assert m["voicegate_sessions_resumed_total"] == 1  # the resume check's: no reconnect
    assert_nothing_secret(done.stdout + done.stderr, TEST_JWT_SECRET)


async def test_a_cap_shorter_than_the_run_fails_at_once(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url, "VOICE_MAX_SESSION_SECONDS": "2"})
    started = time.monotonic()
    done = await verify_process(gateway.http, "--jwt-secret", TEST_JWT_SECRET, "--long")
    assert time.monotonic() - started < 60  # eleven minutes were asked: not held
    assert done.returncode == 1
    assert checklist(done.stdout)["Long session"] == (
        "❌ Long session: not run: the gateway ends every connection after 2 s "
        "(VOICE_MAX_SESSION_SECONDS), before the 11:00 asked — the guide expects more than "
        "10 minutes"
    )
    assert (await scrape(gateway))["voicegate_sessions_admitted_total"] == 1  # the voice check


async def test_a_session_timeout_before_the_announced_cap_is_reported(serve: Serve) -> None:
    server = await serve(redis_enabled=False, voice_max_session_seconds=1.5)
    # What an instance behind the same BASE_URL but configured otherwise would announce.
    metrics.SESSION_MAX_SECONDS.set(3600)
    out = io.StringIO()
    args = _parser().parse_args([
        "verify", server.http, "--jwt-secret", TEST_JWT_SECRET, "--long", "0.1",
        "--turn-every", "0.5",
    ])  # fmt: skip
    assert await verify_command.run(args, out) == 1
    line = checklist(out.getvalue())["Long session"]
    assert re.fullmatch(
        r"❌ Long session: session\.timeout at 0:01, after \d+ turns?: the connection cap "
        r"\(1\.5 s, VOICE_MAX_SESSION_SECONDS\) ended the session before the 0:06 asked, "
        r"although /metrics announces a cap of 3600 s \(instances configured differently "
        r"behind BASE_URL\?\)",
        line,
    ), line


async def test_on_a_terminal_the_progress_line_is_rewritten_in_place(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False)
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "voicegate", "verify", gateway.http, "--jwt-secret",
               TEST_JWT_SECRET, "--long", "0.03", "--turn-every", "0.5"]  # fmt: skip
    process = subprocess.Popen(command, stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)

    def read_until_closed() -> bytes:
        shown = bytearray()
        while chunk := _read_terminal(controller):
            shown += chunk
        return bytes(shown)

    try:  # read in a thread: the gateway answering the command runs on this event loop
        text = (await asyncio.to_thread(read_until_closed)).decode()
    finally:
        os.close(controller)
        await asyncio.to_thread(process.wait, 30)
        assert process.stderr is not None
        process.stderr.close()
    rewrites = text.count("\r\x1b[K⏳ Long session: ")
    assert rewrites >= 3, text
    assert text.count("⏳ Long session: ") == rewrites  # every update rewrites the same line
    assert "\r\x1b[K✅ Long session: 0:0" in text, text  # the result takes its place


def _read_terminal(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other side closed (Linux)
        return b""


@pytest.mark.parametrize("minutes", ["0", "-1", "soon", "1441"])
def test_long_takes_a_positive_number_of_minutes(
    capsys: pytest.CaptureFixture[str], minutes: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["verify", "http://127.0.0.1:1", "--token", "t", "--long", minutes])
    assert exited.value.code == 2
    assert "is not a number of minutes" in capsys.readouterr().err


def test_long_without_a_figure_means_eleven_minutes() -> None:
    args = _parser().parse_args(["verify", "http://127.0.0.1:1", "--token", "t", "--long"])
    assert args.long == 11
    assert _parser().parse_args(["verify", "http://127.0.0.1:1", "--token", "t"]).long is None
