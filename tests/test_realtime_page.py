"""OpenAI's browser convention in a real browser (issue 9): a page in headless Chromium opens
`new WebSocket(url, ["realtime", "openai-insecure-api-key." + key])` at `/v1/realtime`, with the
user's token as the key or with an ephemeral secret it minted itself, and completes a spoken turn.

Chromium fails a handshake whose offered subprotocols get no answer (1006), so a turn that
completes shows that the gateway answered `realtime`. The page (`tests/pages/realtime_browser.html`)
comes from an origin of its own, as a browser app does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.browser import Browser, Page, assert_no_token_leaked, needs_chromium
from tests.clients import make_token
from tests.page_server import PageServer
from tests.servers import InProcessServer

pytestmark = needs_chromium

Serve = Callable[..., Awaitable[InProcessServer]]


async def open_app(browser: Browser, pages: PageServer, server: InProcessServer) -> Page:
    page = await browser.new_page()
    await page.goto(f"{pages.url('realtime_browser.html')}?gateway={server.http}")
    return page


def assert_a_spoken_turn(turn: dict[str, Any]) -> None:
    assert turn["protocol"] == "realtime"  # the offer was answered: Chromium kept the socket
    assert turn["types"][0] == "session.created"  # no `gateway.*` events on OpenAI's path
    assert not [kind for kind in turn["types"] if kind.startswith("gateway.")]
    assert turn["errors"] == [] and "error" not in turn["types"]
    assert turn["types"].count("response.output_audio.delta") > 1
    assert turn["echo"] is True, turn  # the engine's answer: what the page said, byte for byte
    assert turn["heardBytes"] == turn["sentBytes"] == 48000
    assert turn["transcript"] == "I heard 1.0 seconds of audio"
    assert turn["status"] == "completed"


async def test_the_users_token_as_the_api_key(
    serve: Serve, pages: PageServer, browser: Browser
) -> None:
    server = await serve(redis_enabled=False)
    page = await open_app(browser, pages, server)
    token = make_token("browser-app-1")
    turn = await page.evaluate(f"talk({json.dumps(token)})")
    assert_a_spoken_turn(turn)
    assert_no_token_leaked(page)


async def test_an_ephemeral_secret_minted_by_the_page(
    serve: Serve, pages: PageServer, browser: Browser
) -> None:
    server = await serve(redis_enabled=False)
    page = await open_app(browser, pages, server)
    token = make_token("browser-app-2")
    result = await page.evaluate(f"talkWithSecret({json.dumps(token)})")
    secret = result["secret"]
    assert secret["value"].startswith("ek_")
    assert abs(secret["expires_at"] - (time.time() + 600)) < 30
    assert_a_spoken_turn(result["turn"])
    assert_no_token_leaked(page, secret["value"])
