"""Headless Chromium for tests: a fresh profile, a fake microphone fed from a WAV file, and tabs
driven over the DevTools protocol (`tests/devtools.py`).

Chromium's fake media devices stand in for the microphone, so a page really captures, resamples
and sends audio. Tests that need the browser mark their module with `needs_chromium` and take the
`browser` fixture (conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
import shutil
import struct
import wave
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.devtools import DevTools


def chromium_binary() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = chromium_binary()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium (/usr/bin/chromium or `chromium` on PATH); "
    "`apt-get install chromium` to run the real-browser tests",
)
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
        """The first truthy value of the JS expression `predicate`, within `timeout` seconds.

        It is re-checked on every DOM change: a page under test shows what it waits on."""
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

    def console(self, *, browser: bool = True) -> list[str]:
        """Everything the page (and, unless `browser=False`, the browser) printed to this tab's
        console."""
        lines = []
        for event in self.devtools.events:
            if event.get("sessionId") != self.session:
                continue
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled":
                lines.append(" ".join(json.dumps(arg) for arg in params.get("args", [])))
            elif event["method"] == "Log.entryAdded" and browser:
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


def assert_no_token_leaked(page: Page, *secrets: str, browser: bool = True) -> None:
    """No JWT (nor any of `secrets`) in the tab's console, and no uncaught exception.

    `browser=False` checks only what the page printed: Chromium itself prints the URL of a
    WebSocket it could not connect, with a `?token=` in it when the page put one there."""
    lines = page.console(browser=browser)
    leaked = [line for line in lines if JWT.search(line) or any(s in line for s in secrets)]
    assert not leaked, leaked
    assert not page.exceptions(), page.exceptions()


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
