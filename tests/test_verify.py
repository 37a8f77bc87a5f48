"""`voicegate verify` against real gateways: the checklist, its exit code, and no secret shown.

The gateways run in process (`serve`); the command runs beside them, on the same event loop or
as a process of its own.
"""

from __future__ import annotations

import asyncio
import io
import sys
from dataclasses import dataclass

import pytest

from tests.clients import make_token, open_voice, refused
from tests.redis_server import RedisServer, free_port
from tests.servers import TEST_JWT_SECRET, Serve
from tests.standin_openai import StandinOpenAI
from voicegate.cli import _parser, main
from voicegate.cli import verify as verify_command


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def verify_process(*argv: str) -> Done:
    """The real entry point: `python -m voicegate verify …` in a process of its own (awaited,
    so that a gateway on this event loop goes on serving it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicegate", "verify", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(90):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Done(process.returncode, stdout.decode(), stderr.decode())


async def verify_here(*argv: str) -> tuple[int, str]:
    """`voicegate verify …` on this event loop: the exit code and the output."""
    out = io.StringIO()
    code = await verify_command.run(_parser().parse_args(["verify", *argv]), out)
    return code, out.getvalue()


def checklist(output: str) -> dict[str, str]:
    """Check name -> its whole line, for the ✅/❌ lines of the output."""
    lines = [line for line in output.splitlines() if line.startswith(("✅", "❌"))]
    return {line[2:].split(":", 1)[0]: line for line in lines}


def assert_nothing_secret(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output
    assert "eyJ" not in output  # no JWT at all, the minted ones included
    assert "Traceback" not in output


async def test_healthy_gateway_passes_every_check(serve: Serve, redis_server: RedisServer) -> None:
    gateway = await serve(redis_url=redis_server.url)
    done = await verify_process(gateway.http, "--jwt-secret", TEST_JWT_SECRET, "--rate-limit")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = checklist(done.stdout)
    assert list(checks) == ["Health", "Ready", "Voice session", "Resume", "Rate limit"]
    assert all(line.startswith("✅") for line in checks.values()), done.stdout
    assert "healthy (engine local, Redis " in checks["Health"]
    assert " ms" in checks["Health"]
    assert "48000 bytes (1.0 s) echoed byte for byte" in checks["Voice session"]
    assert "resumed: true, same session id" in checks["Resume"]
    assert (
        'session 6 refused with 4029 "Rate limit exceeded (5 sessions/hour max)"'
        in checks["Rate limit"]
    )
    assert done.stdout.splitlines()[-1] == "5 passed, 0 failed"
    assert done.stderr == ""
    assert_nothing_secret(done.stdout, TEST_JWT_SECRET)
    assert "⚠️ Rate limit exceeded for user verify-" in gateway.log  # a throwaway user's quota


async def test_openai_engine_session_asks_for_the_response_and_reports_the_audio(
    serve: Serve, redis_server: RedisServer
) -> None:
    async with StandinOpenAI() as upstream:
        gateway = await serve(
            redis_url=redis_server.url,
            voice_engine="openai",
            openai_api_key="sk-test-standin-key-0123456789",
            openai_realtime_url=upstream.url,
        )
        done = await verify_process(
            gateway.http, "--jwt-secret", TEST_JWT_SECRET, "--long", "0.03", "--turn-every", "0.5"
        )
        output = done.stdout
        assert done.returncode == 0, output + done.stderr
        assert "healthy (engine openai, Redis " in checklist(output)["Health"]
        assert "✅ Voice session: 1.0 s of audio back from openai" in output
        # Held for ~2 s, a turn every 0.5 s, each asked for with response.create and answered.
        long = checklist(output)["Long session"]
        assert "in one session, " in long and ", each answered with audio by openai " in long
        turns = int(long.split(" turns,")[0].rsplit(" ", 1)[1])
        assert upstream.connections[-1].types().count("response.create") == turns
        # Server VAD answers a manual commit only when asked; the local engine needs no asking.
        assert "response.create" in upstream.connections[0].types()
        assert_nothing_secret(output, TEST_JWT_SECRET, "sk-test-standin-key-0123456789")


@pytest.mark.parametrize("outage", ["never-up", "went-down"])
async def test_redis_down_fails_health_but_the_voice_session_falls_back(
    serve: Serve, redis_server: RedisServer, outage: str
) -> None:
    if outage == "never-up":
        gateway = await serve(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    else:
        gateway = await serve(redis_url=redis_server.url)
        redis_server.stop()
    done = await verify_process(gateway.http, "--jwt-secret", TEST_JWT_SECRET)
    assert done.returncode == 1, done.stdout + done.stderr
    checks = checklist(done.stdout)
    assert checks["Health"].startswith("❌ Health: degraded — Redis unavailable")
    assert "serving from memory (using_fallback: true)" in checks["Health"]
    assert checks["Voice session"].startswith("✅"), done.stdout
    assert checks["Resume"].startswith("✅"), done.stdout
    assert done.stdout.splitlines()[-1] == "3 passed, 1 failed"
    assert_nothing_secret(done.stdout + done.stderr, TEST_JWT_SECRET)


async def test_bad_token_fails_the_voice_session_with_the_4001_reason(
    serve: Serve, redis_server: RedisServer
) -> None:
    gateway = await serve(redis_url=redis_server.url)
    token = make_token(secret="another-secret-another-secret-0123456789")
    code, output = await verify_here(gateway.http, "--token", token)
    assert code == 1
    checks = checklist(output)
    assert checks["Health"].startswith("✅")
    assert checks["Voice session"] == (
        "❌ Voice session: refused with close 4001: Invalid token signature"
    )
    assert checks["Resume"] == "❌ Resume: not checked: no voice session to resume"
    assert output.splitlines()[-1] == "2 passed, 2 failed"
    assert_nothing_secret(output, token)


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        (f"http://127.0.0.1:{free_port()}", "connection refused"),
        ("http://no-such-host.invalid:8000", "DNS lookup failed"),
    ],
    ids=["refused", "dns"],
)
async def test_unreachable_base_url_is_one_clear_failure(base_url: str, reason: str) -> None:
    done = await verify_process(base_url, "--jwt-secret", TEST_JWT_SECRET, "--timeout", "5")
    assert done.returncode == 1
    health = done.stdout.splitlines()[1]
    assert health.startswith(f"❌ Health: cannot reach {base_url}: {reason}"), done.stdout
    assert list(checklist(done.stdout)) == ["Health"]
    assert done.stdout.splitlines()[-1] == "0 passed, 1 failed"
    assert done.stderr == ""
    assert_nothing_secret(done.stdout, TEST_JWT_SECRET)


async def test_rate_limit_with_a_token_refuses_to_spend_the_users_quota(
    serve: Serve, redis_server: RedisServer
) -> None:
    gateway = await serve(redis_url=redis_server.url)
    token = make_token("real-user")
    code, output = await verify_here(gateway.http, "--token", token, "--rate-limit")
    assert code == 1
    checks = checklist(output)
    assert [line[0] for line in checks.values()] == ["✅", "✅", "✅", "✅", "❌"]
    assert "--rate-limit needs --jwt-secret" in checks["Rate limit"]
    assert_nothing_secret(output, token)

    for _ in range(4):  # the voice check spent one session of five, the resume none
        await (await open_voice(gateway, token)).close()
    assert await refused(gateway, token) == (4029, "Rate limit exceeded (5 sessions/hour max)")


async def test_rate_limit_figures_come_from_the_refusal(
    serve: Serve, redis_server: RedisServer
) -> None:
    gateway = await serve(redis_url=redis_server.url, voice_rate_limit="2/minute")
    code, output = await verify_here(gateway.http, "--jwt-secret", TEST_JWT_SECRET, "--rate-limit")
    assert code == 0, output
    assert checklist(output)["Rate limit"] == (
        "✅ Rate limit: sessions 1–2 admitted, session 3 refused with 4029 "
        '"Rate limit exceeded (2 sessions/minute max)"'
    )


@pytest.mark.parametrize(
    ("settings", "health", "voice"),
    [
        ({"redis_enabled": False}, "❌ Health: healthy — Redis disabled (REDIS_ENABLED=false)",
         "✅"),
        ({"redis_enabled": False, "enable_voice_realtime": False},
         "❌ Health: disabled — the voice feature is off",
         "❌ Voice session: refused with close 1008: Voice realtime feature disabled"),
    ],
    ids=["memory-only", "feature-off"],
)  # fmt: skip
async def test_health_names_what_a_deployment_is_missing(
    serve: Serve, settings: dict[str, object], health: str, voice: str
) -> None:
    gateway = await serve(**settings)
    code, output = await verify_here(gateway.http, "--jwt-secret", TEST_JWT_SECRET)
    assert code == 1
    checks = checklist(output)
    assert checks["Health"].startswith(health), output
    assert checks["Voice session"].startswith(voice), output


@pytest.mark.parametrize(
    "argv",
    [
        ["localhost:8000", "--token", "t"],  # no scheme
        ["ftp://example.com", "--token", "t"],
        ["http://127.0.0.1:8000"],  # no credentials
        ["http://127.0.0.1:8000", "--token", "t", "--jwt-secret", "s"],  # both
        ["http://127.0.0.1:8000", "--token", "t", "--timeout", "0"],
    ],
    ids=["no-scheme", "bad-scheme", "no-credentials", "both-credentials", "zero-timeout"],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["verify", *argv])
    assert exited.value.code == 2
    assert "usage: voicegate verify" in capsys.readouterr().err
