"""One contract suite for every backend: memory, Redis, and Redis behind the fallback layer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable

import pytest

from tests.redis_server import RedisServer
from voicegate._retry import Backoff
from voicegate.conversation import Turn
from voicegate.storage import (
    Decision,
    Lease,
    LeaseRef,
    MemoryBackend,
    RateWindow,
    RedisBackend,
    RedisTarget,
    ResilientBackend,
    SessionRecord,
    StateBackend,
    client_for,
)

LIMIT = RateWindow(5, 3600)
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
    target = RedisTarget.parse(server.url)
    redis = RedisBackend(client_for(target, timeout=2))
    if request.param == "redis":
        yield redis
        await redis.close()
        return
    # A generous op timeout: this suite is about answers; test_resilience.py is about faults.
    resilient = ResilientBackend(
        redis, op_timeout=2.0, backoff=Backoff(base=0.02, cap=0.2), masked_url=target.masked
    )
    await resilient.start()
    assert resilient.shared
    yield resilient
    assert resilient.shared, "the resilient backend fell back: its answers came from memory"
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
    limit = RateWindow(3, 1)
    decisions = [await backend.hit("rl", limit) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.count for d in decisions] == [1, 2, 3, 3]
    assert decisions[-1].refusal == "rate_limit"
    assert 0 < decisions[-1].retry_after <= 1.0
    async with asyncio.timeout(5):  # the window slides: a slot frees after the oldest hit ages
        while not (await backend.hit("rl", limit)).allowed:
            await asyncio.sleep(0.1)


async def test_rate_limit_is_per_user_and_resettable(backend: StateBackend) -> None:
    limit = RateWindow(1, 3600)
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
    await backend.release("cc", first.session_id, leases[0].connection_id, resumable=False)
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
    # Not the owner any more: no effect.
    await backend.release("cl", rec.session_id, old.connection_id, resumable=False)
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


@pytest.mark.parametrize("user", ["weird{user}", "x{y", "", "ünï", "~74"])
async def test_unusual_user_ids_keep_their_own_state(backend: StateBackend, user: str) -> None:
    rec = record(user)
    assert (await backend.admit(rec, RateWindow(1, 3600), TTL, lease())).allowed
    assert await backend.get_session(user, rec.session_id) == rec
    neighbour = record(user + "x")  # a different id never shares the window
    assert (await backend.admit(neighbour, RateWindow(1, 3600), TTL, lease())).allowed


async def test_ping_figures_and_sharing(backend: StateBackend) -> None:
    assert await backend.ping() >= 0
    figures = await backend.figures()
    if backend.name == "memory":
        assert figures is None and not backend.shared
        return
    assert backend.shared
    assert figures is not None and figures.version and figures.latency_ms >= 0
    assert figures.connected_clients is not None and figures.connected_clients >= 1
    assert figures.maxmemory == 0 and figures.used_memory and figures.used_memory_human


async def test_cancel_admission_refunds_everything(backend: StateBackend) -> None:
    limit = RateWindow(1, 3600)
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
    batch = [LeaseRef("rm", mine.session_id, kept), LeaseRef("rm", theirs.session_id, lost)]
    assert await backend.renew_many(batch) == [True, False]


# -- resume without a session id (claim_latest) ----------------------------------------------


async def moment() -> None:
    """Let the clock move on, so that two marks made one after the other never tie (Redis
    counts in milliseconds)."""
    await asyncio.sleep(0.01)


async def admitted(backend: StateBackend, user: str, held: Lease) -> SessionRecord:
    rec = record(user)
    assert (await backend.admit(rec, LIMIT, TTL, held)).allowed
    return rec


def latest(
    backend: StateBackend, user: str, held: Lease, *, grace: float = 60, stale: float = 10
) -> Awaitable[SessionRecord | Decision | None]:
    return backend.claim_latest(user, TTL, held, grace=grace, stale_after=stale)


async def test_claim_latest_takes_the_newest_lost_session_first(backend: StateBackend) -> None:
    a, b = lease(), lease()
    first, second = await admitted(backend, "cl1", a), await admitted(backend, "cl1", b)
    await backend.release("cl1", first.session_id, a.connection_id, resumable=True)
    await moment()
    await backend.release("cl1", second.session_id, b.connection_id, resumable=True)
    assert await latest(backend, "cl1", lease()) == second
    assert await latest(backend, "cl1", lease()) == first  # the second one is live again
    assert await latest(backend, "cl1", lease()) is None  # both live: nothing to take


async def test_claim_latest_only_within_the_grace(backend: StateBackend) -> None:
    held = lease()
    rec = await admitted(backend, "cl2", held)
    await backend.release("cl2", rec.session_id, held.connection_id, resumable=True)
    await asyncio.sleep(0.3)
    assert await latest(backend, "cl2", lease(), grace=0.2) is None
    assert await latest(backend, "cl2", lease(), grace=60) is None  # trimmed for good


async def test_claim_latest_skips_live_leases_and_takes_over_stale_ones(
    backend: StateBackend,
) -> None:
    old = lease()
    rec = await admitted(backend, "cl3", old)
    assert await latest(backend, "cl3", lease(), stale=10) is None  # renewed lately: alive
    await asyncio.sleep(0.1)
    new = lease()
    assert await latest(backend, "cl3", new, stale=0.05) == rec  # its holder is presumed dead
    assert await backend.renew_many([LeaseRef("cl3", rec.session_id, old)]) == [False]
    assert await backend.renew("cl3", rec.session_id, new)


async def test_claim_latest_never_gives_one_session_to_two_connections(
    backend: StateBackend,
) -> None:
    held = lease()
    rec = await admitted(backend, "cl4", held)
    await backend.release("cl4", rec.session_id, held.connection_id, resumable=True)
    results = await asyncio.gather(*(latest(backend, "cl4", lease()) for _ in range(5)))
    assert results.count(rec) == 1
    assert results.count(None) == 4


async def test_claim_latest_respects_the_cap(backend: StateBackend) -> None:
    a, b = lease(2), lease(2)
    first = await admitted(backend, "cl5", a)
    await admitted(backend, "cl5", b)
    await backend.release("cl5", first.session_id, a.connection_id, resumable=True)
    refused = await latest(backend, "cl5", lease(1))  # one slot, and it is taken
    assert isinstance(refused, Decision)
    assert (refused.allowed, refused.refusal, refused.count, refused.limit) == (
        False, "concurrency", 1, 1,
    )  # fmt: skip
    assert await latest(backend, "cl5", lease(2)) == first


async def test_a_session_the_client_closed_is_not_resumed(backend: StateBackend) -> None:
    held = lease()
    rec = await admitted(backend, "cl6", held)
    await backend.release("cl6", rec.session_id, held.connection_id, resumable=False)
    assert await latest(backend, "cl6", lease()) is None
    assert await backend.get_session("cl6", rec.session_id) == rec  # resumable by id still


async def test_an_old_connection_cannot_end_a_newer_ones_session(backend: StateBackend) -> None:
    old, new = lease(), lease()
    rec = await admitted(backend, "cl7", old)
    assert await backend.claim("cl7", rec.session_id, TTL, new) == rec
    await backend.release("cl7", rec.session_id, old.connection_id, resumable=False)  # no effect
    await backend.release("cl7", rec.session_id, new.connection_id, resumable=True)
    assert await latest(backend, "cl7", lease()) == rec


async def test_renewal_keeps_alive_but_never_resurrects(backend: StateBackend) -> None:
    ended_lease, alive_lease, lost_lease = lease(), lease(), lease()
    ended = await admitted(backend, "cl8", ended_lease)
    alive = await admitted(backend, "cl8", alive_lease)
    lost = await admitted(backend, "cl8", lost_lease)
    await backend.release("cl8", ended.session_id, ended_lease.connection_id, resumable=False)
    await backend.release("cl8", lost.session_id, lost_lease.connection_id, resumable=True)
    await moment()
    # A tick that was on its way when `ended` ended renews it: it must not come back.
    renewals = [
        LeaseRef("cl8", s.session_id, h) for s, h in ((ended, ended_lease), (alive, alive_lease))
    ]
    assert await backend.renew_many(renewals) == [True, True]
    await moment()
    # Every lease is stale now (stale=0): the renewal made `alive` the newest, `ended` is out.
    taker = lease()
    assert await latest(backend, "cl8", taker, stale=0) == alive
    await backend.release("cl8", alive.session_id, taker.connection_id, resumable=False)
    taker = lease()
    assert await latest(backend, "cl8", taker, stale=0) == lost
    await backend.release("cl8", lost.session_id, taker.connection_id, resumable=False)
    assert await latest(backend, "cl8", lease(), stale=0) is None


async def test_cancelled_admission_is_not_resumable(backend: StateBackend) -> None:
    held = lease()
    rec = await admitted(backend, "cl9", held)
    await backend.cancel_admission("cl9", rec.session_id)
    assert await latest(backend, "cl9", lease(), stale=0) is None


# -- small values ----------------------------------------------------------------------------


async def test_values_round_trip_and_expire(backend: StateBackend) -> None:
    digest = "ab" * 32
    assert await backend.get_value("plan", "v1") is None
    await backend.set_value("plan", "v1", "elite", 1)
    await backend.set_value("client_secret", digest, '{"sub": "v1"}', 60)
    assert await backend.get_value("plan", "v1") == "elite"
    assert await backend.get_value("plan", "v2") is None
    assert await backend.get_value("client_secret", digest) == '{"sub": "v1"}'
    async with asyncio.timeout(5):
        while await backend.get_value("plan", "v1") is not None:
            await asyncio.sleep(0.1)
    assert await backend.get_value("client_secret", digest) == '{"sub": "v1"}'


async def test_a_secret_is_never_a_key_name(backend: StateBackend) -> None:
    with pytest.raises(ValueError, match="digest"):
        await backend.set_value("client_secret", "ek_the-secret-itself", "x", 60)
    with pytest.raises(ValueError, match="digest"):
        await backend.get_value("client_secret", "ek_the-secret-itself")


@pytest.mark.slow
async def test_every_script_runs_on_cluster(cluster_port: int) -> None:
    """claim_latest reads record keys it builds itself: they share the user's slot, which
    Cluster requires of a script."""
    target = RedisTarget.parse(f"redis+cluster://127.0.0.1:{cluster_port}")
    backend = RedisBackend(client_for(target, timeout=2))
    try:
        held = lease()
        rec = await admitted(backend, "cluster{user}", held)
        assert await backend.renew_many([LeaseRef("cluster{user}", rec.session_id, held)]) == [True]
        await backend.release("cluster{user}", rec.session_id, held.connection_id, resumable=True)
        assert await latest(backend, "cluster{user}", lease()) == rec
        await backend.set_value("plan", "cluster{user}", "elite", 60)
        assert await backend.get_value("plan", "cluster{user}") == "elite"
        await backend.cancel_admission("cluster{user}", rec.session_id)
        assert await latest(backend, "cluster{user}", lease(), stale=0) is None
    finally:
        await backend.close()
