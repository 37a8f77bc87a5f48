"""The demo page (`GET /`) in a real browser: headless Chromium driven over the DevTools protocol
(`tests/browser.py`).

Chromium's fake media devices stand in for the microphone, fed from a generated WAV file, so the
page really captures, resamples and sends audio; the local engine's VAD ends the turn and the
echo comes back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from tests.browser import JWT, Browser, assert_no_token_leaked, needs_chromium
from tests.clients import make_token
from tests.redis_server import RedisServer
from tests.servers import ServerProcess

pytestmark = needs_chromium

DEV_GATEWAY = {"REDIS_ENABLED": "false", "JWT_SECRET": ""}  # an ephemeral secret: dev tokens
SESSION_SHOWN = "document.querySelector('#session-id').textContent.replace('—', '')"


# -- the tests ----------------------------------------------------------------------------------


async def test_the_page_talks_and_listens_to_the_local_engine(
    server_factory: Callable[..., ServerProcess], browser: Browser, tmp_path: Path
) -> None:
    gateway = server_factory(DEV_GATEWAY)
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/")
    assert await page.text("h1") == "voicegate"
    assert await page.text("#status") == "Not connected."

    await page.click("#connect")  # a development token, the microphone, the WebSocket
    session_id = await page.wait_for(SESSION_SHOWN)
    assert await page.text("#engine") == "local"
    assert await page.text("#resumed") == "no"

    # The fake microphone "speaks" for 1.5 s, then falls silent: the engine's VAD ends the turn.
    answer = await page.wait_for(
        "document.querySelector('#transcript .assistant')?.textContent", timeout=20
    )
    heard = re.search(r"I heard (\d+\.\d) seconds of audio", answer)
    assert heard, answer
    seconds = float(heard[1])
    assert 1.5 <= seconds <= 3.5, answer  # the sound, the silence before it and 0.5 s after
    assert f"({heard[1]} seconds of audio)" in await page.text("#transcript .you")
    received = float((await page.text("#audio-received")).removesuffix(" s"))
    assert abs(received - seconds) <= 0.11  # the echo: every byte sent in the turn came back
    assert float((await page.text("#audio-sent")).removesuffix(" s")) >= seconds
    assert "seconds" not in await page.text("#status")  # no error line
    assert await page.evaluate("document.querySelector('#status').dataset.tone") != "error"

    # The echo arrives faster than it plays: "Interrupt" stops the playback still going on.
    await page.wait_for("!document.querySelector('#interrupt').disabled")
    await page.click("#interrupt")
    assert await page.text("#status") == "Answer interrupted. Listening…"
    assert await page.evaluate("document.querySelector('#interrupt').disabled") is True

    # "Stop talking" ends a turn at once: the silence sent since the last one comes back.
    sent = float((await page.text("#audio-sent")).removesuffix(" s"))
    await page.wait_for(f"parseFloat(document.querySelector('#audio-sent').textContent) > {sent}")
    await page.click("#commit")
    await page.wait_for("document.querySelectorAll('#transcript .assistant').length === 2")
    assert await page.text("#session-id") == session_id

    shot = await page.screenshot(tmp_path / "demo-page.png")
    assert shot.stat().st_size > 10_000
    assert not JWT.search(await page.evaluate("document.documentElement.outerHTML"))
    assert_no_token_leaked(page)

    await page.click("#disconnect")
    assert await page.text("#status") == "Disconnected."


async def test_the_page_resumes_its_session_after_a_server_restart(
    server_factory: Callable[..., ServerProcess], redis_server: RedisServer, browser: Browser
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url})  # a configured JWT secret
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/")
    await page.type("#token", make_token("demo-user"))  # such a server gives no dev tokens
    await page.click("#connect")
    session_id = await page.wait_for(SESSION_SHOWN)
    assert await page.text("#resumed") == "no"

    await asyncio.to_thread(gateway.stop)  # SIGTERM: `gateway.draining`, then close 1001
    status = await page.wait_for(
        "document.querySelector('#status').textContent.includes('Reconnecting') &&"
        " document.querySelector('#status').textContent"
    )
    assert status.startswith("Closed 1001: Server restarting, reconnect with your session_id")
    await asyncio.to_thread(gateway.start)

    await page.wait_for("document.querySelector('#resumed').textContent === 'yes'", timeout=30)
    assert await page.text("#session-id") == session_id
    # The fake microphone may already be heard again ("Hearing you…"): either is a live session.
    assert await page.text("#status") in ("Session resumed. Listening…", "Hearing you…")
    log = await page.text("#log")
    assert "gateway.draining" in log
    assert "closed 1001" in log
    assert_no_token_leaked(page)


async def test_the_page_shows_why_the_gateway_refused_it(
    server_factory: Callable[..., ServerProcess], browser: Browser
) -> None:
    gateway = server_factory({"REDIS_ENABLED": "false", "VOICE_RATE_LIMIT": "1/hour"})
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/")
    await page.type("#token", make_token("demo-user"))  # a pasted token this time
    await page.click("#connect")
    await page.wait_for(SESSION_SHOWN)
    await page.click("#disconnect")

    await page.click("#connect")  # a second new session within the hour
    status = await page.wait_for(
        "document.querySelector('#status').dataset.tone === 'error' &&"
        " document.querySelector('#status').textContent"
    )
    assert status == (
        "Closed 4029: Rate limit exceeded (1 sessions/hour max)"
        " — Too many sessions: wait before starting another one."
    )
    assert await page.evaluate("document.querySelector('#connect').disabled") is False
    assert_no_token_leaked(page)
