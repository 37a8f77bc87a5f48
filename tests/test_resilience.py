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
from voicegate.config import RateLimit, Settings
from voicegate.storage import Lease, RedisBackend, ResilientBackend, SessionRecord, client_from_url
from voicegate.storage.redis import Keys

LIMIT = RateLimit(5, "hour")


def settings_for(url: str, **overrides: object) -> Settings:
    return Settings(
        redis_url=url, retry_base_delay=0.02, retry_max_delay=0.2, redis_op_timeout_ms=250,
        **overrides,
    )  # fmt: skip


def new_record(user: str = "u1") -> SessionRecord:
    return SessionRecord(session_id=uuid.uuid4().hex, user_id=user, plan="elite", engine="local")


def lease() -> Lease:
    return Lease(uuid.uuid4().hex, 30, 10)


async def resilient_for(url: str) -> ResilientBackend:
    backend = ResilientBackend(RedisBackend(client_from_url(url, timeout=0.5)), settings_for(url))
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
        assert not backend.available
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
        assert not backend.available
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
        assert decision.allowed and not backend.available
        assert elapsed < 0.25 + 0.5, f"admission waited {elapsed:.3f} s on a frozen Redis"
        started = time.monotonic()  # the circuit is open: later calls do not wait at all
        await backend.get_session("u1", "x")
        assert time.monotonic() - started < 0.2  # no REDIS_OP_TIMEOUT_MS (0.25 s) spent waiting
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
        assert not backend.available
        redis_server.start()
        await wait_until(lambda: backend.available)
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
    other = RedisBackend(client_from_url(redis_server.url, timeout=1))
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
        await wait_until(lambda: backend.available)
        stored = await other.get_session("u1", rec.session_id)
        assert stored is not None and stored.preferences["voice"] == "newer"
    finally:
        await other.close()
        await backend.close()


async def test_noscript_after_script_flush(redis_server: RedisServer, raw: aioredis.Redis) -> None:
    backend = RedisBackend(client_from_url(redis_server.url, timeout=1))
    try:
        assert (await backend.admit(new_record(), LIMIT, 60, lease())).allowed
        await raw.script_flush()
        assert (await backend.admit(new_record(), LIMIT, 60, lease())).allowed
        assert (await backend.hit("x", LIMIT)).allowed
    finally:
        await backend.close()


async def test_concurrent_admissions_admit_exactly_the_limit(redis_server: RedisServer) -> None:
    clients = [RedisBackend(client_from_url(redis_server.url, timeout=2)) for _ in range(5)]
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
        await wait_until(lambda: backend.available)
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
        await wait_until(lambda: backend.available)
        other = RedisBackend(client_from_url(redis_server.url, timeout=1))
        try:
            assert await other.get_session("res2", rec.session_id) == rec
        finally:
            await other.close()
    finally:
        await backend.close()


async def test_cancelled_during_an_outage_is_refunded_in_redis(redis_server: RedisServer) -> None:
    backend = await resilient_for(redis_server.url)
    pid = redis_server._process.pid  # type: ignore[union-attr]
    one = RateLimit(1, "hour")
    try:
        rec = new_record("cnl")
        assert (await backend.admit(rec, one, 60, lease())).allowed
        os.kill(pid, signal.SIGSTOP)
        await backend.get_session("cnl", "x")  # times out: the circuit opens
        assert not backend.available
        await backend.cancel_admission("cnl", rec.session_id)  # memory only, journaled
        os.kill(pid, signal.SIGCONT)
        await wait_until(lambda: backend.available)
        assert (await backend.admit(new_record("cnl"), one, 60, lease())).allowed
    finally:
        os.kill(pid, signal.SIGCONT)
        await backend.close()
