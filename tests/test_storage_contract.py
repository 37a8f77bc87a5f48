"""One contract suite for every backend: memory, Redis, and Redis behind the fallback layer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.redis_server import RedisServer
from voicegate.config import RateLimit, Settings
from voicegate.conversation import Turn
from voicegate.storage import (
    Lease,
    MemoryBackend,
    RedisBackend,
    ResilientBackend,
    SessionRecord,
    StateBackend,
    client_from_url,
)

LIMIT = RateLimit(5, "hour")
TTL = 60


def lease(max_concurrent: int = 10) -> Lease:
    return Lease(uuid.uuid4().hex, 30, max_concurrent)


def record(user: str = "u1", session_id: str | None = None) -> SessionRecord:
    return SessionRecord(
        session_id=session_id or uuid.uuid4().hex, user_id=user, plan="elite", engine="local"
    )


@pytest.fixture(params=["memory", "redis", "resilient"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StateBackend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisBackend(client_from_url(server.url, timeout=1))
    if request.param == "redis":
        yield redis
        await redis.close()
        return
    resilient = ResilientBackend(redis, Settings(redis_url=server.url))
    await resilient.start()
    assert resilient.available
    yield resilient
    await resilient.close()


async def test_session_round_trip(backend: StateBackend) -> None:
    rec = record()
    rec.preferences["voice"] = "verse"
    rec.conversation.append(Turn(role="user", text="hello"))
    await backend.save_session(rec, TTL)
    loaded = await backend.get_session("u1", rec.session_id)
    assert loaded == rec


async def test_unknown_and_foreign_sessions_are_none(backend: StateBackend) -> None:
    rec = record("alice")
    await backend.save_session(rec, TTL)
    assert await backend.get_session("alice", "nope") is None
    assert await backend.get_session("mallory", rec.session_id) is None


async def test_delete(backend: StateBackend) -> None:
    rec = record()
    await backend.save_session(rec, TTL)
    await backend.delete_session("u1", rec.session_id)
    assert await backend.get_session("u1", rec.session_id) is None
    await backend.delete_session("u1", rec.session_id)  # no error the second time


async def test_session_expires_after_ttl(backend: StateBackend) -> None:
    rec = record()
    await backend.save_session(rec, 1)
    assert await backend.get_session("u1", rec.session_id) is not None
    async with asyncio.timeout(5):
        while await backend.get_session("u1", rec.session_id) is not None:
            await asyncio.sleep(0.1)


async def test_rate_limit_sliding_window(backend: StateBackend) -> None:
    limit = RateLimit(3, "second")
    decisions = [await backend.hit("rl", limit) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.count for d in decisions] == [1, 2, 3, 3]
    assert decisions[-1].refusal == "rate_limit"
    assert 0 < decisions[-1].retry_after <= 1.0
    async with asyncio.timeout(5):  # the window slides: a slot frees after the oldest hit ages
        while not (await backend.hit("rl", limit)).allowed:
            await asyncio.sleep(0.1)


async def test_rate_limit_is_per_user_and_resettable(backend: StateBackend) -> None:
    limit = RateLimit(1, "hour")
    assert (await backend.hit("a", limit)).allowed
    assert (await backend.hit("b", limit)).allowed
    assert not (await backend.hit("a", limit)).allowed
    await backend.reset("a")
    assert (await backend.hit("a", limit)).allowed


async def test_admit_writes_record_and_refusal_writes_nothing(backend: StateBackend) -> None:
    admitted = []
    for _ in range(LIMIT.count):
        rec = record("adm")
        decision = await backend.admit(rec, LIMIT, TTL, lease())
        assert decision.allowed
        admitted.append(rec)
    refused = record("adm")
    decision = await backend.admit(refused, LIMIT, TTL, lease())
    assert not decision.allowed
    assert decision.refusal == "rate_limit"
    assert (decision.count, decision.limit) == (5, 5)
    assert await backend.get_session("adm", refused.session_id) is None
    for rec in admitted:
        assert await backend.get_session("adm", rec.session_id) == rec


async def test_concurrency_cap_and_release(backend: StateBackend) -> None:
    first, second, third = record("cc"), record("cc"), record("cc")
    leases = [lease(2), lease(2), lease(2)]
    assert (await backend.admit(first, LIMIT, TTL, leases[0])).allowed
    assert (await backend.admit(second, LIMIT, TTL, leases[1])).allowed
    refused = await backend.admit(third, LIMIT, TTL, leases[2])
    assert (refused.allowed, refused.refusal, refused.limit) == (False, "concurrency", 2)
    assert await backend.get_session("cc", third.session_id) is None
    await backend.release("cc", first.session_id, leases[0].connection_id)
    assert (await backend.admit(third, LIMIT, TTL, leases[2])).allowed


async def test_claim_takes_over_and_old_owner_learns_it(backend: StateBackend) -> None:
    rec = record("cl")
    old = lease(2)
    assert (await backend.admit(rec, LIMIT, TTL, old)).allowed
    assert await backend.renew("cl", rec.session_id, old)
    new = lease(2)
    claimed = await backend.claim("cl", rec.session_id, TTL, new)
    assert claimed == rec
    assert not await backend.renew("cl", rec.session_id, old)
    assert await backend.renew("cl", rec.session_id, new)
    await backend.release("cl", rec.session_id, old.connection_id)  # not the owner: no effect
    assert await backend.renew("cl", rec.session_id, new)


async def test_claim_unknown_and_at_cap(backend: StateBackend) -> None:
    assert await backend.claim("cu", "missing", TTL, lease()) is None
    a, b, c = record("cu"), record("cu"), record("cu")
    for rec in (a, b, c):
        await backend.save_session(rec, TTL)
    assert isinstance(await backend.claim("cu", a.session_id, TTL, lease(2)), SessionRecord)
    assert isinstance(await backend.claim("cu", b.session_id, TTL, lease(2)), SessionRecord)
    refused = await backend.claim("cu", c.session_id, TTL, lease(2))
    assert not isinstance(refused, SessionRecord) and refused is not None
    assert refused.refusal == "concurrency"


async def test_claim_refreshes_ttl(backend: StateBackend) -> None:
    rec = record("ttl")
    await backend.save_session(rec, 1)
    await backend.claim("ttl", rec.session_id, 30, lease())
    await asyncio.sleep(1.3)  # past the first TTL: the claim must have extended it
    assert await backend.get_session("ttl", rec.session_id) is not None


async def test_user_ids_with_braces(backend: StateBackend) -> None:
    rec = record("weird{user}")
    assert (await backend.admit(rec, LIMIT, TTL, lease())).allowed
    assert await backend.get_session("weird{user}", rec.session_id) == rec


async def test_ping(backend: StateBackend) -> None:
    assert await backend.ping() >= 0


async def test_cancel_admission_refunds_everything(backend: StateBackend) -> None:
    limit = RateLimit(1, "hour")
    rec, held = record("refund"), lease(1)
    assert (await backend.admit(rec, limit, TTL, held)).allowed
    await backend.cancel_admission("refund", rec.session_id)
    assert await backend.get_session("refund", rec.session_id) is None
    again = record("refund")
    assert (await backend.admit(again, limit, TTL, lease(1))).allowed  # no hit, no lease left


async def test_renew_many_answers_in_order(backend: StateBackend) -> None:
    mine, theirs = record("rm"), record("rm")
    kept, lost = lease(), lease()
    assert (await backend.admit(mine, LIMIT, TTL, kept)).allowed
    assert (await backend.admit(theirs, LIMIT, TTL, lost)).allowed
    await backend.claim("rm", theirs.session_id, TTL, lease())  # resumed by someone else
    batch = [("rm", mine.session_id, kept), ("rm", theirs.session_id, lost)]
    assert await backend.renew_many(batch) == [True, False]
