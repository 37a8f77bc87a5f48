"""The journal alone: memory's state written back into a real redis-server, and what an
interrupted write-back keeps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from tests.redis_server import RedisServer
from voicegate.errors import StorageUnavailable
from voicegate.storage import (
    Lease,
    MemoryBackend,
    RateWindow,
    RedisBackend,
    RedisTarget,
    SessionRecord,
    client_for,
)
from voicegate.storage.journal import Journal
from voicegate.storage.keys import Keys

T = TypeVar("T")
WINDOW = RateWindow(5, 3600)


def new_record(user: str) -> SessionRecord:
    return SessionRecord(session_id=uuid.uuid4().hex, user_id=user, plan="elite", engine="local")


def lease() -> Lease:
    return Lease(uuid.uuid4().hex, 30, 10)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(client_for(RedisTarget.parse(redis_server.url), timeout=2))
    yield backend
    await backend.close()


async def admitted_from_memory(
    memory: MemoryBackend, journal: Journal, user: str
) -> tuple[SessionRecord, Lease]:
    """What the resilient backend does with an admission while Redis is away."""
    rec, held = new_record(user), lease()
    assert (await memory.admit(rec, WINDOW, 60, held)).allowed
    journal.claimed(user, rec.session_id, held)
    journal.hit(user, WINDOW)
    return rec, held


async def test_write_back_merges_every_kind_of_entry(redis: RedisBackend) -> None:
    memory, journal = MemoryBackend(), Journal()
    rec, held = await admitted_from_memory(memory, journal, "jw")
    await memory.set_value("plan", "jw", "elite", 60)
    journal.value_set("plan", "jw")
    # Another instance saved a newer version of this one meanwhile: it stays.
    contested = new_record("jw")
    await memory.save_session(contested, 60)
    journal.saved("jw", contested.session_id)
    newer = contested.model_copy(update={"plan": "newer", "updated_at": contested.updated_at + 5})
    await redis.save_session(newer, 60)

    assert await journal.write_back(redis, memory) == 5  # 2 records, 1 hit, 1 mark, 1 value
    assert not journal
    assert await redis.get_session("jw", rec.session_id) == rec
    assert await redis.get_session("jw", contested.session_id) == newer
    assert await redis.get_value("plan", "jw") == "elite"
    assert await redis.client.zscore(Keys("jw").admissions, rec.session_id) is not None
    assert await redis.renew("jw", rec.session_id, held)  # the owner memory gave it
    assert not await redis.renew("jw", rec.session_id, lease())
    claimed = await redis.claim_latest("jw", 60, lease(), grace=60, stale_after=0)
    assert claimed == rec  # marked resumable (stale_after=0: any lease counts as stale)


async def test_a_release_during_the_outage_ends_the_session_in_redis(redis: RedisBackend) -> None:
    memory, journal = MemoryBackend(), Journal()
    rec, held = await admitted_from_memory(memory, journal, "jr")
    await memory.release("jr", rec.session_id, held.connection_id, resumable=False)
    journal.released("jr", rec.session_id, held.connection_id, False)
    await journal.write_back(redis, memory)
    assert await redis.claim_latest("jr", 60, lease(), grace=60, stale_after=0) is None
    assert await redis.get_session("jr", rec.session_id) == rec  # resumable by id still


async def test_an_interrupted_write_back_keeps_the_rest(redis: RedisBackend) -> None:
    memory, journal = MemoryBackend(), Journal()
    records = [(await admitted_from_memory(memory, journal, f"ji{i}"))[0] for i in range(3)]
    calls = 0

    async def failing_after_two(label: str, awaitable: Awaitable[T], /) -> T:
        nonlocal calls
        calls += 1
        if calls > 2:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise StorageUnavailable("ConnectionError: reset by peer")
        return await awaitable

    with pytest.raises(StorageUnavailable):
        await journal.write_back(redis, memory, call=failing_after_two)
    assert len(journal.sessions) == 1  # two records were written: they are not kept
    assert len(journal.leases) == 3 and len(journal.hits) == 3
    await journal.write_back(redis, memory)
    assert not journal
    for rec in records:
        assert await redis.get_session(rec.user_id, rec.session_id) == rec


async def test_a_cancelled_write_back_keeps_the_rest_and_what_came_in_meanwhile(
    redis: RedisBackend,
) -> None:
    memory, journal = MemoryBackend(), Journal()
    first, _ = await admitted_from_memory(memory, journal, "jc")
    inside, release = asyncio.Event(), asyncio.Event()

    async def held_up(label: str, awaitable: Awaitable[T], /) -> T:
        inside.set()
        try:
            await release.wait()  # never set: the write-back is cancelled here, at shutdown
        except asyncio.CancelledError:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never to be awaited now
            raise
        return await awaitable

    writing = asyncio.create_task(journal.write_back(redis, memory, call=held_up))
    async with asyncio.timeout(5):
        await inside.wait()
    late, _ = await admitted_from_memory(memory, journal, "jc")  # while the write-back runs
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert journal.sessions == {("jc", first.session_id), ("jc", late.session_id)}
    await journal.write_back(redis, memory)
    assert await redis.get_session("jc", first.session_id) == first
    assert await redis.get_session("jc", late.session_id) == late
    assert await redis.client.zcard(Keys("jc").admissions) == 2
