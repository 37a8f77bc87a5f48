"""The demo page (`GET /`) in a real browser: headless Chromium driven over the DevTools protocol.

Chromium's fake media devices stand in for the microphone, fed from a generated WAV file, so the
page really captures, resamples and sends audio; the local engine's VAD ends the turn and the
echo comes back. The DevTools connection uses the `websockets` library the project depends on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import struct
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.clients import make_token
from tests.redis_server import RedisServer
from tests.servers import Gateway


def chromium_binary() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = chromium_binary()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium (/usr/bin/chromium or `chromium` on PATH); "
    "`apt-get install chromium` to test the demo page in a real browser",
)

DEV_GATEWAY = {"REDIS_ENABLED": "false", "JWT_SECRET": ""}  # an ephemeral secret: dev tokens
SESSION_SHOWN = "document.querySelector('#session-id').textContent.replace('—', '')"
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.")  # header.payload. of any JWT: must never show up


def write_voice_wav(path: Path, rate: int = 48000) -> Path:
    """1 s of silence, 1.5 s of loud voice-like sound, then 3 s of silence (PCM16 mono WAV).

    The lead-in gives the page time to connect before the "speech". The sound glides in pitch,
    with harmonics and a syllable rhythm, so the browser's noise suppression lets it through.
    The silence after it is far longer than the local engine's 500 ms end of turn.
    """
    samples = bytearray()
    phase = 0.0
    for n in range(int(rate * 1.5)):
        t = n / rate
        phase += 2 * math.pi * (180 + 120 * math.sin(2 * math.pi * 0.7 * t)) / rate
        envelope = 0.6 + 0.4 * math.sin(2 * math.pi * 4 * t)
        value = 0.4 * envelope * sum(math.sin(k * phase) / k for k in (1, 2, 3, 4))
        samples += struct.pack("<h", round(max(-1.0, min(1.0, value)) * 32767))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(2 * rate) + bytes(samples) + bytes(6 * rate))
    return path


# -- a minimal DevTools protocol client ----------------------------------------------------------


class DevTools:
    """One DevTools WebSocket: commands matched to replies by id, every event kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        command: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        reply = self._replies[command["id"]] = asyncio.get_running_loop().create_future()
        await self._ws.send(json.dumps(command))
        async with asyncio.timeout(60):
            message = await reply
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        result: dict[str, Any] = message["result"]
        return result

    def next_event(self, method: str, session: str | None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next `method` event; ask for it before causing the event."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, future))
        return future

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    reply = self._replies.pop(message["id"], None)
                    if reply is not None and not reply.done():
                        reply.set_result(message)
                    continue
                self.events.append(message)
                for waiter in list(self._waiters):
                    method, session, future = waiter
                    if method == message["method"] and session == message.get("sessionId"):
                        self._waiters.remove(waiter)
                        if not future.done():
                            future.set_result(message)
        finally:
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_exception(ConnectionError("the DevTools connection closed"))
            for _, _, future in self._waiters:
                future.cancel()

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


# Resolves when `predicate()` is truthy, re-checked on every DOM change: waits on events, not
# on a clock, and gives up after `ms` with what the page says, for the failure message.
WAIT_FOR_JS = """(predicate, ms, what) => new Promise((resolve, reject) => {
  let observer, timer;
  const check = () => {
    let value;
    try { value = predicate(); } catch { value = undefined; }
    if (!value) return false;
    observer?.disconnect();
    clearTimeout(timer);
    resolve(value);
    return true;
  };
  if (check()) return;
  observer = new MutationObserver(check);
  const all = {subtree: true, childList: true, characterData: true, attributes: true};
  observer.observe(document, all);
  timer = setTimeout(() => {
    observer.disconnect();
    reject(new Error(`${what}: not within ${ms} ms; the page says:\\n${document.body.innerText}`));
  }, ms);
})"""


class Page:
    """One tab, attached through a flat DevTools session."""

    def __init__(self, devtools: DevTools, session: str) -> None:
        self.devtools = devtools
        self.session = session

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.devtools.call(method, params, session=self.session)

    async def goto(self, url: str) -> None:
        loaded = self.devtools.next_event("Page.loadEventFired", self.session)
        await self.call("Page.navigate", {"url": url})
        async with asyncio.timeout(15):
            await loaded

    async def evaluate(self, expression: str, *, gesture: bool = False) -> Any:
        result = await self.call(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": gesture,
            },
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(details.get("exception", {}).get("description") or details)
        return result["result"].get("value")

    async def wait_for(self, predicate: str, timeout: float = 15) -> Any:
        """The first truthy value of the JS expression `predicate`, within `timeout` seconds."""
        call = (
            f"({WAIT_FOR_JS})(() => ({predicate}), {int(timeout * 1000)}, {json.dumps(predicate)})"
        )
        async with asyncio.timeout(timeout + 10):
            return await self.evaluate(call)

    async def text(self, selector: str) -> str:
        value = await self.evaluate(f"document.querySelector({json.dumps(selector)}).textContent")
        return str(value)

    async def click(self, selector: str) -> None:
        """Click as the user would (a user gesture, so audio may start)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()", gesture=True)

    async def type(self, selector: str, text: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", {"text": text})

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def console(self) -> list[str]:
        """Everything the page and the browser printed to this tab's console."""
        lines = []
        for event in self.devtools.events:
            if event.get("sessionId") != self.session:
                continue
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled":
                lines.append(" ".join(json.dumps(arg) for arg in params.get("args", [])))
            elif event["method"] == "Log.entryAdded":
                entry = params.get("entry", {})
                lines.append(f"{entry.get('text')} {entry.get('url', '')}")
        return lines

    def exceptions(self) -> list[str]:
        return [
            json.dumps(event["params"]["exceptionDetails"])
            for event in self.devtools.events
            if event["method"] == "Runtime.exceptionThrown"
            and event.get("sessionId") == self.session
        ]


class Browser:
    """Headless Chromium with a fresh profile and a fake microphone playing `microphone_wav`."""

    def __init__(self, process: asyncio.subprocess.Process, devtools: DevTools) -> None:
        self.process = process
        self.devtools = devtools
        self._drain = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def launch(cls, binary: str, profile: Path, microphone_wav: Path) -> Browser:
        process = await asyncio.create_subprocess_exec(
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        seen, match = bytearray(), None
        try:
            async with asyncio.timeout(30):
                while match is None:
                    line = await process.stderr.readline()
                    if not line:
                        raise RuntimeError(f"Chromium exited {await process.wait()}:\n{seen!r}")
                    seen += line
                    match = re.search(rb"DevTools listening on (ws://\S+)", line)
            ws = await connect(match[1].decode(), max_size=2**26, ping_interval=None)
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        return cls(process, DevTools(ws))

    async def _drain_stderr(self) -> None:
        """Read Chromium's chatter, so that a full pipe never blocks it."""
        assert self.process.stderr is not None
        while await self.process.stderr.read(65536):
            pass

    async def new_page(self, width: int = 900, height: int = 1100) -> Page:
        target = await self.devtools.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.devtools.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self.devtools, attached["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            await page.call(f"{domain}.enable")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        await page.call("Emulation.setDeviceMetricsOverride", metrics)
        return page

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError):  # it may close before it answers
            await self.devtools.call("Browser.close")
        await self.devtools.close()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self._drain


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    microphone = write_voice_wav(tmp_path / "microphone.wav")
    browser = await Browser.launch(CHROMIUM, tmp_path / "profile", microphone)
    yield browser
    await browser.close()


def assert_no_token_leaked(page: Page) -> None:
    leaked = [line for line in page.console() if JWT.search(line)]
    assert not leaked, leaked
    assert not page.exceptions(), page.exceptions()


# -- the tests ----------------------------------------------------------------------------------


async def test_the_page_talks_and_listens_to_the_local_engine(
    gateway_factory: Callable[..., Gateway], browser: Browser, tmp_path: Path
) -> None:
    gateway = gateway_factory(DEV_GATEWAY)
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
    gateway_factory: Callable[..., Gateway], redis_server: RedisServer, browser: Browser
) -> None:
    gateway = gateway_factory({"REDIS_URL": redis_server.url})  # a configured JWT secret
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
    gateway_factory: Callable[..., Gateway], browser: Browser
) -> None:
    gateway = gateway_factory({"REDIS_ENABLED": "false", "VOICE_RATE_LIMIT": "1/hour"})
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
