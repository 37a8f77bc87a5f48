"""The circuit alone, with a stand-in probe (a plain async function): no Redis needed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from voicegate._retry import Backoff
from voicegate.errors import StorageUnavailable
from voicegate.storage.circuit import Circuit

FAST = Backoff(attempts=2, base=0.01, factor=2, cap=0.05)
TARGET = "redis://default:***@127.0.0.1:1"


class Standin:
    """What the circuit probes: answers while `up`, else fails as an unreachable Redis does."""

    def __init__(self, up: bool) -> None:
        self.up = up
        self.probes = 0
        self.write_backs: list[bool] = []  # the circuit's `available` during each write-back
        self.write_back_fails = False
        self.changes: asyncio.Queue[bool] = asyncio.Queue()

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise StorageUnavailable("ConnectionError: Connection refused")

    async def write_back(self, circuit: Circuit) -> None:
        self.write_backs.append(circuit.available)
        if self.write_back_fails:
            raise StorageUnavailable("ResponseError: OOM command not allowed")

    async def next_change(self) -> bool:
        async with asyncio.timeout(5):
            return await self.changes.get()


def circuit_for(standin: Standin, backoff: Backoff = FAST, op_timeout: float = 0.2) -> Circuit:
    circuit: Circuit

    async def on_reconnect() -> None:
        await standin.write_back(circuit)

    circuit = Circuit(
        standin.probe, op_timeout=op_timeout, backoff=backoff, describe_target=TARGET,
        on_reconnect=on_reconnect,
    )  # fmt: skip
    circuit.add_listener(standin.changes.put_nowait)
    return circuit


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="voicegate")
    return caplog


def lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


@pytest.fixture
async def closing() -> AsyncIterator[list[Circuit]]:
    """Circuits to close at the end, so no reconnect task outlives its test."""
    circuits: list[Circuit] = []
    yield circuits
    for circuit in circuits:
        await circuit.close()


async def test_start_with_an_answer_closes_and_says_so(
    logs: pytest.LogCaptureFixture, closing: list[Circuit]
) -> None:
    standin = Standin(up=True)
    circuit = circuit_for(standin)
    closing.append(circuit)
    await circuit.start()
    assert circuit.available and circuit.reachable
    assert await standin.next_change() is True
    assert lines(logs, "✅ Redis connected successfully: ") == [
        f"✅ Redis connected successfully: {TARGET}"
    ]
    assert standin.write_backs == []  # nothing to hand back at start


async def test_down_at_start_then_back(
    logs: pytest.LogCaptureFixture, closing: list[Circuit]
) -> None:
    standin = Standin(up=False)
    circuit = circuit_for(standin)
    closing.append(circuit)
    await circuit.start()
    assert not circuit.available and not circuit.reachable
    assert await standin.next_change() is False
    assert standin.probes >= FAST.attempts
    assert lines(logs, "❌ Redis connection failed: ") == [
        "❌ Redis connection failed: ConnectionError: Connection refused"
    ]
    assert len(lines(logs, "⚠️ Falling back to in-memory session storage")) == 1
    standin.up = True
    assert await standin.next_change() is True
    assert standin.write_backs == [False]  # the write-back ran before the circuit closed
    assert len(lines(logs, "✅ Redis connected successfully: ")) == 1


async def test_a_failed_call_opens_once_per_outage(
    logs: pytest.LogCaptureFixture, closing: list[Circuit]
) -> None:
    standin = Standin(up=True)
    circuit = circuit_for(standin, backoff=Backoff(attempts=1, base=10, cap=10))
    closing.append(circuit)
    await circuit.start()
    standin.up = False

    async def failing() -> None:
        raise StorageUnavailable("ConnectionError: reset by peer")

    calls = [circuit.call("a", failing()), circuit.call("b", failing())]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, StorageUnavailable) for r in results)
    assert not circuit.available
    assert len(lines(logs, "❌ Redis connection failed: ")) == 1
    assert len(lines(logs, "⚠️ Falling back to in-memory session storage")) == 1
    # Open: a call fails at once, and the coroutine it was given is closed, never awaited.
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await circuit.call("c", asyncio.sleep(5))
    assert time.monotonic() - started < 0.1


async def test_the_op_timeout_bounds_a_call_that_never_answers(closing: list[Circuit]) -> None:
    standin = Standin(up=True)
    circuit = circuit_for(standin, op_timeout=0.1, backoff=Backoff(attempts=1, base=10, cap=10))
    closing.append(circuit)
    await circuit.start()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="no answer within REDIS_OP_TIMEOUT_MS"):
        await circuit.call("frozen", asyncio.Event().wait())
    assert time.monotonic() - started < 0.1 + 0.4
    assert not circuit.available


async def test_attempt_and_read_never_change_the_state(closing: list[Circuit]) -> None:
    standin = Standin(up=False)
    circuit = circuit_for(standin, backoff=Backoff(attempts=1, base=10, cap=10))
    closing.append(circuit)
    await circuit.start()
    assert not circuit.available

    async def answer() -> str:
        return "PONG"

    assert await circuit.attempt("x", answer()) == "PONG"
    assert await circuit.read("x", answer()) == "PONG"  # read in an outage: an attempt
    assert not circuit.available
    standin.up = True
    circuit.nudge()
    assert await standin.next_change() is False
    assert await standin.next_change() is True

    async def failing() -> None:
        raise StorageUnavailable("boom")

    with pytest.raises(StorageUnavailable):
        await circuit.attempt("x", failing())
    assert circuit.available  # an attempt reports, it does not open


async def test_a_failed_write_back_keeps_it_open_but_reachable(
    logs: pytest.LogCaptureFixture, closing: list[Circuit]
) -> None:
    standin = Standin(up=False)
    standin.write_back_fails = True  # e.g. Redis out of memory: PING answers, writes fail
    circuit = circuit_for(standin)
    closing.append(circuit)
    await circuit.start()
    standin.up = True
    async with asyncio.timeout(5):
        while len(standin.write_backs) < 2:
            await asyncio.sleep(0.01)
    assert not circuit.available and circuit.reachable
    assert lines(logs, "Redis answers but the write-back failed")
    standin.write_back_fails = False
    assert await standin.next_change() is False
    assert await standin.next_change() is True


async def test_a_nudge_cuts_the_backoff_short(closing: list[Circuit]) -> None:
    standin = Standin(up=False)
    slow = Backoff(attempts=1, base=60, factor=1, cap=60)  # the next probe: up to a minute away
    circuit = circuit_for(standin, backoff=slow)
    closing.append(circuit)
    await circuit.start()
    assert await standin.next_change() is False
    standin.up = True
    circuit.nudge()
    assert await standin.next_change() is True


async def test_close_stops_reconnecting(closing: list[Circuit]) -> None:
    standin = Standin(up=False)
    circuit = circuit_for(standin)
    await circuit.start()
    await circuit.close()
    probes = standin.probes
    standin.up = True
    await asyncio.sleep(0.2)  # several backoff delays: a live loop would have probed
    assert standin.probes == probes and not circuit.available
    circuit.open(StorageUnavailable("after close"))  # ignored: nothing restarts
    assert standin.probes == probes


async def test_calls_are_timed_under_their_own_label(closing: list[Circuit]) -> None:
    standin = Standin(up=True)
    circuit = circuit_for(standin)
    closing.append(circuit)
    await circuit.start()

    def count(label: str) -> float:
        value = REGISTRY.get_sample_value(
            "voicegate_redis_command_seconds_count", {"command": label}
        )
        return value or 0.0

    before = count("circuit_test")

    async def answer() -> int:
        return 1

    await circuit.call("circuit_test", answer())
    await circuit.attempt("circuit_test", answer())
    assert count("circuit_test") == before + 2
