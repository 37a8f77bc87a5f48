"""The original front-end's hook in a real browser (issue 8): a page with the hook's exact wire
behaviour (`tests/pages/legacy_hook.html`), in headless Chromium with a fake microphone.

The page comes from an origin of its own, as the original front-end does; it knows only the
beta event names, never asks for them, and reconnects 2 s after any close with the same URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.browser import Browser, Page, assert_no_token_leaked, needs_chromium
from tests.clients import make_token
from tests.page_server import PageServer
from tests.redis_server import RedisServer
from tests.servers import InProcessServer, ServerProcess
from voicegate.voice.dialect import BETA_NAMES

pytestmark = needs_chromium

Serve = Callable[..., Awaitable[InProcessServer]]
GA_NAMES_WITH_BETA = {name.decode() for name in BETA_NAMES}
BYTES_PER_SECOND = 24000 * 2
ITEMS = (
    "(wire.types['conversation.item.created'] ?? 0) + (wire.types['conversation.item.added'] ?? 0)"
)
TURN_ANSWERED = "wire.transcripts.length === 1 && wire.types['response.audio.done'] === 1"


async def open_hook(browser: Browser, pages: PageServer, gateway_http: str, user: str) -> Page:
    """The page, signed in as `user`, after the user pressed "Start conversation"."""
    page = await browser.new_page()
    await page.goto(f"{pages.url('legacy_hook.html')}?backend={gateway_http}")
    await page.evaluate(f"auth.token = {json.dumps(make_token(user))}")
    await page.click("#start")
    return page


async def wire(page: Page) -> dict[str, Any]:
    record: dict[str, Any] = await page.evaluate("wire")
    return record


async def test_the_hook_hears_the_echo_under_the_names_it_knows(
    serve: Serve, pages: PageServer, browser: Browser
) -> None:
    server = await serve(redis_enabled=False)
    page = await open_hook(browser, pages, server.http, "legacy-page-1")
    await page.wait_for("wire.sessions.length === 1")
    await page.click("#interrupt")  # nothing plays yet: ignored, no error box

    # The fake microphone "speaks" for 1.5 s, then falls silent: the engine's VAD ends the turn
    # and echoes it, which the page hears only under the beta names.
    await page.wait_for(TURN_ANSWERED, timeout=25)
    record = await wire(page)
    heard = re.fullmatch(r"\((\d+\.\d) seconds of audio\)", record["transcripts"][0])
    assert heard, record["transcripts"]
    seconds = float(heard[1])
    assert 1.5 <= seconds <= 3.5, record  # the sound, the silence before it and 0.5 s after
    # Every byte of the committed turn came back and was decoded for playback.
    assert abs(record["heardBytes"] - seconds * BYTES_PER_SECOND) <= 0.05 * BYTES_PER_SECOND
    assert record["types"]["response.audio.delta"] > 1
    assert record["sentBytes"] >= record["heardBytes"]
    assert record["sentBytes"] == record["sentChunks"] * 4096 * 2  # ScriptProcessor-sized
    assert set(record["unknown"]) & GA_NAMES_WITH_BETA == set(), record["unknown"]
    assert not set(record["types"]) & GA_NAMES_WITH_BETA, record["types"]
    assert record["serverErrors"] == [] and await page.text("#error") == ""
    assert record["closes"] == [] and record["opens"] == 1
    assert_no_token_leaked(page)


async def test_the_hook_is_resumed_after_a_server_restart(
    server_factory: Callable[..., ServerProcess],
    redis_server: RedisServer,
    pages: PageServer,
    browser: Browser,
) -> None:
    # One new session an hour: a reconnect the gateway did not resume would get 4029.
    gateway = server_factory({"REDIS_URL": redis_server.url, "VOICE_RATE_LIMIT": "1/hour"})
    page = await open_hook(browser, pages, gateway.http, "legacy-page-2")
    await page.wait_for(TURN_ANSWERED, timeout=25)
    first = (await wire(page))["sessions"][0]
    assert first["resumed"] is False

    stopping = asyncio.create_task(asyncio.to_thread(gateway.stop))  # SIGTERM: drain, close 1001
    await page.wait_for("wire.closes.length === 1", timeout=20)
    closed_at = time.monotonic()
    await stopping
    await asyncio.to_thread(gateway.start)  # the same port; the page retries every 2 s
    back_after = time.monotonic() - closed_at

    # The hook tries again 2, 4 and 6 s after the close, then gives up (a fourth close).
    await page.wait_for("wire.sessions.length === 2 || wire.closes.length === 4", timeout=30)
    record = await wire(page)
    assert len(record["sessions"]) == 2, (
        f"the hook gave up: closes {record['closes']}; the gateway was back"
        f" {back_after:.1f} s after its close (the hook waits 6 s)"
    )
    # The conversation came back: the engine replays both turns, under whichever name.
    await page.wait_for(f"{ITEMS} >= 4")
    record = await wire(page)
    assert record["closes"][0][0] == 1001, record["closes"]
    assert record["sessions"][1] == {"session_id": first["session_id"], "resumed": True}
    assert 4029 not in [code for code, _ in record["closes"]]
    assert record["types"]["gateway.draining"] == 1 and "gateway.draining" in record["unknown"]
    assert set(record["unknown"]) & GA_NAMES_WITH_BETA == set(), record["unknown"]
    assert record["serverErrors"] == [] and await page.text("#error") == ""
    await page.wait_for(f"wire.sentChunks > {record['sentChunks']}")  # the microphone goes on
    # A reconnect may have come while the server was down: Chromium then prints the URL it
    # failed to reach, `?token=` and all (the original front-end's convention, not the page's).
    assert_no_token_leaked(page, browser=False)
