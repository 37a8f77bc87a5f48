"""Faults: Redis down at start, killed, frozen and restarted; nothing accepted is lost."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer, free_port
from voicegate._retry import Backoff
from voicegate.errors import StorageRecovering
from voicegate.ops.health import alerts_for
from voicegate.storage import (
    Lease,
    RateWindow,
    RedisBackend,
    RedisTarget,
    ResilientBackend,
    SessionRecord,
    client_for,
)
from voicegate.storage.keys import Keys, value_key

LIMIT = RateWindow(5, 3600)
FAST = Backoff(base=0.02, cap=0.2)
# Reconnecting waits up to an hour unless nudged: the test decides when the circuit may close.
PATIENT = Backoff(attempts=1, base=3600, factor=1, cap=3600)


def new_record(user: str = "u1") -> SessionRecord:
    return SessionRecord(session_id=uuid.uuid4().hex, user_id=user, plan="elite", engine="local")


def lease() -> Lease:
    return Lease(uuid.uuid4().hex, 30, 10)


def redis_for(url: str) -> RedisBackend:
    return RedisBackend(client_for(RedisTarget.parse(url), timeout=1))


async def resilient_for(url: str, backoff: Backoff = FAST) -> ResilientBackend:
    target = RedisTarget.parse(url)
    backend = ResilientBackend(
        RedisBackend(client_for(target, timeout=0.5)), op_timeout=0.25, backoff=backoff,
        masked_url=target.masked,
    )  # fmt: skip
    await backend.start()
    return backend


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def wait_until(predicate: object, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_unreachable_at_start_falls_back_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicegate")
    backend = await resilient_for(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert not backend.shared
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("❌ Redis connection failed: ") for m in messages)
        assert "⚠️ Falling back to in-memory session storage" in messages
        rec = new_record()
        assert (await backend.admit(rec, LIMIT, 60, lease())).allowed
        assert await backend.get_session("u1", rec.session_id) == rec
    finally:
        await backend.close()


async def test_killed_mid_run_answers_from_memory(redis_server: RedisServer) -> None:
    backend = await resilient_for(redis_server.url)
    try:
        before = new_record()
        await backend.save_session(before, 60)
        redis_server.stop()
        started = time.monotonic()
        assert await backend.get_session("u1", before.session_id) == before  # the mirror
        assert (await backend.admit(new_record(), LIMIT, 60, lease())).allowed
        assert time.monotonic() - started < 1.0
        assert not backend.shared
    finally:
        await backend.close()


async def test_frozen_redis_is_bounded_by_the_op_timeout(redis_server: RedisServer) -> None:
    backend = await resilient_for(redis_server.url)
    pid = redis_server._process.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)  # Redis accepts bytes but never answers
    try:
        started = time.monotonic()
        decision = await backend.admit(new_record(), LIMIT, 60, lease())
        elapsed = time.monotonic() - started
        assert decision.allowed and not backend.shared
        assert elapsed < 0.25 + 0.5, f"admission waited {elapsed:.3f} s on a frozen Redis"
        started = time.monotonic()  # the circuit is open: later calls do not wait at all
        assert (await backend.admit(new_record(), LIMIT, 60, lease())).allowed
        await backend.save_session(new_record(), 60)
        assert time.monotonic() - started < 0.2  # no REDIS_OP_TIMEOUT_MS (0.25 s) spent waiting
        # A record memory does not know is asked of Redis once, bounded by the op timeout; with
        # no answer it cannot be called gone: "retry shortly".
        started = time.monotonic()
        with pytest.raises(StorageRecovering):
            await backend.get_session("u1", "unknown")
        assert time.monotonic() - started < 0.25 + 0.5
    finally:
        os.kill(pid, signal.SIGCONT)
        await backend.close()


async def test_restart_returns_to_redis_and_writes_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voicegate")
    backend = await resilient_for(redis_server.url)
    try:
        kept = new_record("alice")
        assert (await backend.admit(kept, LIMIT, 60, lease())).allowed
        redis_server.stop()
        during = [new_record("alice") for _ in range(3)]
        for rec in during:
            assert (await backend.admit(rec, LIMIT, 60, lease())).allowed
        updated = kept.model_copy(deep=True)
        updated.preferences["voice"] = "verse"
        updated.touch()
        await backend.save_session(updated, 60)
        assert not backend.shared
        redis_server.start()
        await wait_until(lambda: backend.shared)
        connected = [
            r for r in caplog.records if "✅ Redis connected successfully" in r.getMessage()
        ]
        assert len(connected) == 2  # at start, and again after the recovery

        raw = aioredis.from_url(redis_server.url)  # Redis restarted empty: all comes from memory
        try:
            keys = Keys("alice")
            for rec in during:
                stored = await raw.get(keys.session(rec.session_id))
                assert SessionRecord.model_validate_json(stored) == rec
            stored = SessionRecord.model_validate_json(await raw.get(keys.session(kept.session_id)))
            assert stored.preferences["voice"] == "verse"
            assert await raw.zcard(keys.admissions) == 4
        finally:
            await raw.aclose()
        # The limit now counts the four admissions made before and during the outage.
        assert (await backend.admit(new_record("alice"), LIMIT, 60, lease())).allowed
        assert not (await backend.admit(new_record("alice"), LIMIT, 60, lease())).allowed
    finally:
        await backend.close()


async def test_write_back_keeps_the_newer_record(redis_server: RedisServer) -> None:
    backend = await resilient_for(redis_server.url)
    other = RedisBackend(client_for(RedisTarget.parse(redis_server.url), timeout=1))
    try:
        rec = new_record()
        await backend.save_session(rec, 60)
        pid = redis_server._process.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        stale = rec.model_copy(deep=True)
        stale.preferences["voice"] = "stale"
        stale.updated_at = rec.updated_at + 1
        await backend.save_session(stale, 60)  # served from memory
        os.kill(pid, signal.SIGCONT)
        newer = rec.model_copy(deep=True)
        newer.preferences["voice"] = "newer"
        newer.updated_at = rec.updated_at + 2
        await other.save_session(newer, 60)  # another instance wrote meanwhile
        await wait_until(lambda: backend.shared)
        stored = await other.get_session("u1", rec.session_id)
        assert stored is not None and stored.preferences["voice"] == "newer"
    finally:
        await other.close()
        await backend.close()


async def test_noscript_after_script_flush(redis_server: RedisServer, raw: aioredis.Redis) -> None:
    backend = RedisBackend(client_for(RedisTarget.parse(redis_server.url), timeout=1))
    try:
        assert (await backend.admit(new_record(), LIMIT, 60, lease())).allowed
        await raw.script_flush()
        assert (await backend.admit(new_record(), LIMIT, 60, lease())).allowed
        assert (await backend.hit("x", LIMIT)).allowed
    finally:
        await backend.close()


async def test_concurrent_admissions_admit_exactly_the_limit(redis_server: RedisServer) -> None:
    clients = [
        RedisBackend(client_for(RedisTarget.parse(redis_server.url), timeout=2)) for _ in range(5)
    ]
    try:
        attempts = [
            clients[i % len(clients)].admit(new_record("busy"), LIMIT, 60, lease())
            for i in range(100)
        ]
        decisions = await asyncio.gather(*attempts)
        assert sum(d.allowed for d in decisions) == LIMIT.count
        raw = aioredis.from_url(redis_server.url)
        try:
            sessions = [k async for k in raw.scan_iter(match="vg:{busy}:session:*")]
            assert len(sessions) == LIMIT.count  # refused attempts wrote nothing
        finally:
            await raw.aclose()
    finally:
        for client in clients:
            await client.close()


async def test_resume_during_an_outage_keeps_its_owner_after_recovery(
    redis_server: RedisServer,
) -> None:
    backend = await resilient_for(redis_server.url)
    pid = redis_server._process.pid  # type: ignore[union-attr]
    try:
        rec, old = new_record("res"), lease()
        assert (await backend.admit(rec, LIMIT, 60, old)).allowed
        os.kill(pid, signal.SIGSTOP)  # Redis keeps its data but stops answering
        new = lease()
        assert await backend.claim("res", rec.session_id, 60, new) == rec  # from memory
        os.kill(pid, signal.SIGCONT)
        await wait_until(lambda: backend.shared)
        assert await backend.renew("res", rec.session_id, new)  # not taken over by the old one
        assert not await backend.renew("res", rec.session_id, old)
    finally:
        os.kill(pid, signal.SIGCONT)
        await backend.close()


async def test_resume_during_an_outage_writes_the_record_back(redis_server: RedisServer) -> None:
    backend = await resilient_for(redis_server.url)
    try:
        rec = new_record("res2")
        assert (await backend.admit(rec, LIMIT, 60, lease())).allowed
        redis_server.stop()
        assert await backend.claim("res2", rec.session_id, 60, lease()) == rec
        redis_server.start()  # empty: only the write-back can bring the record back
        await wait_until(lambda: backend.shared)
        other = RedisBackend(client_for(RedisTarget.parse(redis_server.url), timeout=1))
        try:
            assert await other.get_session("res2", rec.session_id) == rec
        finally:
            await other.close()
    finally:
        await backend.close()


async def test_cancelled_during_an_outage_is_refunded_in_redis(redis_server: RedisServer) -> None:
    backend = await resilient_for(redis_server.url)
    pid = redis_server._process.pid  # type: ignore[union-attr]
    one = RateWindow(1, 3600)
    try:
        rec = new_record("cnl")
        assert (await backend.admit(rec, one, 60, lease())).allowed
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(StorageRecovering):  # times out: the circuit opens
            await backend.get_session("cnl", "x")
        assert not backend.shared
        await backend.cancel_admission("cnl", rec.session_id)  # memory only, journaled
        os.kill(pid, signal.SIGCONT)
        await wait_until(lambda: backend.shared)
        assert (await backend.admit(new_record("cnl"), one, 60, lease())).allowed
    finally:
        os.kill(pid, signal.SIGCONT)
        await backend.close()


# -- resume without a session id, values, and Redis answering reads only ---------------------


async def test_marks_and_values_accepted_in_an_outage_are_written_back(
    redis_server: RedisServer,
) -> None:
    backend = await resilient_for(redis_server.url)
    other = redis_for(redis_server.url)
    digest = "cd" * 32
    try:
        redis_server.stop()
        kept, ended = new_record("mk"), new_record("mk")
        kept_lease, ended_lease = lease(), lease()
        assert (await backend.admit(kept, LIMIT, 60, kept_lease)).allowed  # from memory
        assert (await backend.admit(ended, LIMIT, 60, ended_lease)).allowed
        await backend.release("mk", kept.session_id, kept_lease.connection_id, resumable=True)
        await backend.release("mk", ended.session_id, ended_lease.connection_id, resumable=False)
        await backend.set_value("plan", "mk", "elite", 60)
        await backend.set_value("client_secret", digest, '{"sub": "mk"}', 60)
        assert not backend.shared
        redis_server.start()  # empty: only the write-back can bring any of this back
        await wait_until(lambda: backend.shared)
        assert await other.get_value("plan", "mk") == "elite"
        assert await other.get_value("client_secret", digest) == '{"sub": "mk"}'
        ttl_ms = await other.client.pttl(value_key("plan", "mk"))
        assert 0 < ttl_ms <= 60_000  # the time it had left, not a fresh minute or none
        # Another instance resumes the lost session without its id; the ended one stays ended.
        taker = lease()
        found = await other.claim_latest("mk", 60, taker, grace=60, stale_after=10)
        assert found == kept
        await other.release("mk", kept.session_id, taker.connection_id, resumable=False)
        assert await other.claim_latest("mk", 60, lease(), grace=60, stale_after=0) is None
    finally:
        await other.close()
        await backend.close()


async def test_a_resume_redis_holds_but_memory_does_not_is_deferred(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    backend = await resilient_for(redis_server.url, backoff=PATIENT)  # starts on memory
    other = redis_for(redis_server.url)
    try:
        assert not backend.shared
        with pytest.raises(StorageRecovering):  # Redis is down: not known to be gone
            await backend.get_session("rc", "anything")
        redis_server.start()
        rec = new_record("rc")
        await other.save_session(rec, 60)  # an instance already back on Redis wrote it
        assert await backend.get_session("rc", "unknown") is None  # Redis says no: unknown
        assert not backend.shared
        with pytest.raises(StorageRecovering):
            await backend.get_session("rc", rec.session_id)
        # Told that Redis answers, the circuit reconnects now, not within the hour.
        await wait_until(lambda: backend.shared)
        assert await backend.get_session("rc", rec.session_id) == rec
    finally:
        await other.close()
        await backend.close()


async def test_a_detached_session_only_redis_knows_is_deferred_not_replaced(
    redis_server: RedisServer,
) -> None:
    """Resume without session_id on an instance still on memory: a new session would lose the
    conversation Redis keeps for the user."""
    redis_server.stop()
    backend = await resilient_for(redis_server.url, backoff=PATIENT)  # starts on memory
    other = redis_for(redis_server.url)
    try:
        # Redis down: nothing to defer to, voice goes on with a new session.
        assert await backend.claim_latest("dl", 60, lease(), grace=60, stale_after=10) is None
        redis_server.start()
        rec, held = new_record("dl"), lease()
        assert (await other.admit(rec, LIMIT, 60, held)).allowed  # an instance back on Redis
        await other.release("dl", rec.session_id, held.connection_id, resumable=True)
        assert not backend.shared
        with pytest.raises(StorageRecovering):
            await backend.claim_latest("dl", 60, lease(), grace=60, stale_after=10)
        await wait_until(lambda: backend.shared)  # told that Redis answers, it reconnects now
        claimed = await backend.claim_latest("dl", 60, lease(), grace=60, stale_after=10)
        assert isinstance(claimed, SessionRecord) and claimed.session_id == rec.session_id
    finally:
        await other.close()
        await backend.close()


async def test_figures_are_read_while_redis_refuses_writes(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    backend = await resilient_for(redis_server.url)
    try:
        await raw.config_set("maxmemory-policy", "noeviction")
        await raw.config_set("maxmemory", "1mb")
        filler = "x" * 64_000
        with pytest.raises(aioredis.ResponseError, match="maxmemory"):
            for i in range(1000):  # at most ~64 MB: an OOM refusal comes far earlier
                await raw.set(f"fill:{i}", filler)
        rec = new_record("oom")
        await backend.save_session(rec, 60)  # refused by Redis: kept in memory, journaled
        assert not backend.shared
        assert await backend.get_session("oom", rec.session_id) == rec
        # PING answers (the probe says reachable), the write-back does not: still on memory,
        # but Redis's figures are read, and they show why.
        await wait_until(lambda: backend.circuit.reachable)
        figures = await backend.figures()
        assert not backend.shared
        assert figures is not None and figures.maxmemory == 1024 * 1024
        assert figures.used_memory is not None and figures.used_memory > figures.maxmemory
        assert "redis_memory_percent" in {alert.name for alert in alerts_for(figures)}
        await raw.config_set("maxmemory", 0)  # memory is raised: the write-back goes through
        await wait_until(lambda: backend.shared)
        stored = await raw.get(Keys("oom").session(rec.session_id))
        assert SessionRecord.model_validate_json(stored) == rec
    finally:
        await raw.config_set("maxmemory", 0)
        await backend.close()
