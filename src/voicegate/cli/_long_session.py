"""`verify --long`: one voice session held for minutes, an audio turn every `--turn-every` s.

The deployment guide asks that a voice session work for more than 10 minutes. This check opens
one session and keeps it: a turn at the start, one every `turn_every` seconds, and a last one once
the duration is over. Each turn must answer (byte for byte from the local engine, with audio
from OpenAI); between turns the events are read, so a `session.timeout`, a `gateway.draining`,
an `error` or a close is seen when it happens. `gateway.upstream_reconnected` is counted and
reported: the session survived it, which is what the gateway promises.

The connection cap, `VOICE_MAX_SESSION_SECONDS`, is the server's; the gateway announces it in
/metrics as `voicegate_session_max_seconds`. When the cap is not longer than the run, the check
fails at once, without holding a session for nothing: the cap would end it. When /metrics cannot
be read, the run goes ahead and a `session.timeout` says the same thing, later.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voicegate.cli._gateway import (
    ENDINGS,
    PROBE_AUDIO,
    Ended,
    Failed,
    GatewayClient,
    audio_turn,
    closed_said,
)
from voicegate.cli._progress import Progress, clock

GUIDE_SECONDS = 600  # "a voice session works for more than 10 minutes"


async def announced_cap(gateway: GatewayClient) -> float | None:
    """`voicegate_session_max_seconds` from /metrics; None when /metrics cannot be read."""
    try:
        response = await gateway.get("/metrics")
    except Failed:
        return None
    if response.status_code != 200:
        return None
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "voicegate_session_max_seconds" and math.isfinite(sample.value):
                return float(sample.value)
    return None


@dataclass
class LongSession:
    """The check's parameters and what it saw so far."""

    gateway: GatewayClient
    token: str
    seconds: float
    turn_every: float
    out: TextIO
    turns: int = 0
    reconnects: int = 0
    started: float = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> str:
        """The ✅ line's text, or `Failed` saying what ended the session, when and how."""
        cap = await announced_cap(self.gateway)
        if cap is not None and cap <= self.seconds:
            short = " — the guide expects more than 10 minutes" if cap <= GUIDE_SECONDS else ""
            raise Failed(
                f"not run: the gateway ends every connection after {cap:g} s "
                f"(VOICE_MAX_SESSION_SECONDS), before the {clock(self.seconds)} "
                f"asked{short}"
            )
        async with asyncio.timeout(self.gateway.timeout):
            ws, first = await self.gateway.open(self.token)
        engine = str(first.get("engine"))
        progress = Progress(self.out, every=max(self.turn_every, min(60.0, self.seconds / 10)))
        latencies: list[float] = []
        self.started = time.monotonic()
        try:
            while True:
                latencies.append(await self._turn(ws, engine))
                progress.update(self._status(latencies[-1]))
                if self.elapsed >= self.seconds:
                    break
                next_turn = min(self.turns * self.turn_every, self.seconds)
                while (left := next_turn - self.elapsed) > 0:
                    await self._idle(ws, min(left, 1.0))  # 1 s: the live line's clock ticks
                    progress.update(self._status(latencies[-1]))
        except Ended as ended:
            raise self._ended(ended, cap) from None
        finally:
            progress.clear()
            await ws.close()
        return self._summary(engine, latencies, cap)

    async def _turn(self, ws: ClientConnection, engine: str) -> float:
        number, at = self.turns + 1, clock(self.elapsed)
        try:
            async with asyncio.timeout(self.gateway.timeout):
                turn = await audio_turn(ws, engine)
            turn.check(engine, PROBE_AUDIO)
        except TimeoutError:
            raise Failed(
                f"turn {number} at {at}: no response.done within {self.gateway.timeout:g} s"
            ) from None
        except Ended:
            raise
        except Failed as failed:
            raise Failed(f"turn {number} at {at}: {failed}") from None
        self.turns = number
        assert turn.latency is not None  # checked
        return turn.latency

    async def _idle(self, ws: ClientConnection, seconds: float) -> None:
        """Read what the gateway sends between turns, for `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    event = json.loads(await ws.recv())
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind in ENDINGS:
                        raise Ended(event)
                    if kind == "gateway.upstream_reconnected":
                        self.reconnects += 1
                    elif kind == "error":
                        message = str(event.get("error", {}).get("message", ""))
                        raise Failed(
                            f"error event at {clock(self.elapsed)} between turns: {message}"
                        )
        except TimeoutError:
            return
        except ConnectionClosed as closed:
            raise Failed(
                f"connection closed at {clock(self.elapsed)}, after {_turns(self.turns)} "
                f"({closed_said(closed)})"
            ) from None

    def _status(self, last: float) -> str:
        return (
            f"⏳ Long session: {clock(self.elapsed)} / {clock(self.seconds)}, "
            f"{_turns(self.turns)}, last {last * 1000:.0f} ms"
        )

    def _ended(self, ended: Ended, cap: float | None) -> Failed:
        at = f"at {clock(self.elapsed)}, after {_turns(self.turns)}"
        if ended.kind == "gateway.draining":
            return Failed(
                f"gateway.draining {at}: the gateway restarted under the session (a "
                "client reconnects with its session_id; this check wants one "
                "unbroken session)"
            )
        said = f"session.timeout {at}: the connection cap"
        if isinstance(ended.max_seconds, int | float):
            said += f" ({ended.max_seconds:g} s, VOICE_MAX_SESSION_SECONDS)"
        said += f" ended the session before the {clock(self.seconds)} asked"
        if cap is not None:
            said += (
                f", although /metrics announces a cap of {cap:g} s (instances configured "
                "differently behind BASE_URL?)"
            )
        return Failed(said)

    def _summary(self, engine: str, latencies: list[float], cap: float | None) -> str:
        how = "echoed byte for byte" if engine == "local" else f"answered with audio by {engine}"
        median, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
        text = (
            f"{clock(self.elapsed)} in one session, {_turns(self.turns)}, each {how} "
            f"(first audio median {median:.0f} ms, max {worst:.0f} ms); "
            "no session.timeout"
        )
        text += f" (cap {cap:g} s)" if cap is not None else " (cap not announced: /metrics unread)"
        if self.reconnects:
            text += f"; the engine connection was restored {self.reconnects} time(s) on the way"
        if self.seconds <= GUIDE_SECONDS:
            text += "; shorter than the guide's 10 minutes"
        return text


def _turns(count: int) -> str:
    return f"{count} turn" if count == 1 else f"{count} turns"
