"""`stop_task`: a shutdown step that ends the task even when it lost a cancellation, bounded."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from voicegate._tasks import stop_task


async def _loses_one_cancellation(started: asyncio.Event) -> None:
    # What Python 3.11's wait_for does inside redis-py: the CancelledError never reaches the task.
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await asyncio.Event().wait()


async def _ignores_cancellations(started: asyncio.Event, release: asyncio.Event) -> None:
    started.set()
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()


async def test_a_lost_cancellation_is_sent_again() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_loses_one_cancellation(started))
    await started.wait()
    async with asyncio.timeout(10):
        assert await stop_task(task, within=5)
    assert task.cancelled()


async def test_a_task_that_never_stops_is_named_and_left(caplog: pytest.LogCaptureFixture) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_ignores_cancellations(started, release), name="stubborn")
    await started.wait()
    try:
        async with asyncio.timeout(10):
            assert not await stop_task(task, within=0.2)
        assert "Background task stubborn did not stop within 0.2s" in caplog.text
    finally:
        release.set()
        await task
