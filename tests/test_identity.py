"""Identity-provider tokens (issue 8): the plan at a dot path, or looked up over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from tests.clients import make_token, open_voice, refused
from tests.plan_standin import PlanStandin
from tests.redis_server import RedisServer
from tests.servers import InProcessServer

Serve = Callable[..., "asyncio.Future[InProcessServer]"]


def supabase_token(user: str, *, plan: str | None, email: str = "ana@example.com") -> str:
    """What Supabase issues: a UUID `sub`, `aud: authenticated`, `role`, the plan (if any)
    under `app_metadata`, where only the backend can write it."""
    return make_token(
        user, None, email=email, aud="authenticated", role="authenticated",
        session_id=str(uuid.uuid4()),
        app_metadata={"provider": "email", **({"plan": plan} if plan else {})},
        user_metadata={"full_name": "Ana"},
    )  # fmt: skip


SUPABASE = {"jwt_audience": "authenticated", "jwt_plan_claim": "app_metadata.plan"}


async def test_supabase_token_with_its_plan_in_app_metadata(serve: Serve) -> None:
    server = await serve(redis_enabled=False, **SUPABASE)
    client = await open_voice(server, supabase_token(str(uuid.uuid4()), plan="Intelia"))
    assert client.first is not None and client.first["resumed"] is False
    await client.close()
    code, reason = await refused(server, supabase_token(str(uuid.uuid4()), plan="free"))
    assert code == 4003 and "Elite" in reason


async def test_a_token_without_plan_is_looked_up_once_for_every_instance(
    serve: Serve, redis_server: RedisServer
) -> None:
    user = str(uuid.uuid4())
    async with PlanStandin({user: "elite"}) as plans:
        settings = {
            **SUPABASE, "redis_url": redis_server.url, "plan_lookup_url": plans.url,
            "plan_lookup_token": plans.token,
        }  # fmt: skip
        first, second = await serve(**settings), await serve(**settings)
        token = supabase_token(user, plan=None)
        client = await open_voice(first, token)
        await client.close()
        assert len(plans.requests) == 1
        asked = plans.requests[0]
        assert asked["query"] == {"user_id": user, "email": "ana@example.com"}
        assert asked["headers"]["authorization"] == f"Bearer {plans.token}"
        other = await open_voice(second, token)  # another instance: the cache in Redis answers
        await other.close()
        assert len(plans.requests) == 1


async def test_a_user_the_service_does_not_know_has_no_plan(serve: Serve) -> None:
    async with PlanStandin({"known": None}) as plans:
        server = await serve(
            redis_enabled=False, plan_lookup_url=plans.url, plan_lookup_token=plans.token
        )
        for user in ("known", "stranger"):  # `{"plan": null}`, and 404
            code, reason = await refused(server, make_token(user, plan=None))
            assert code == 4003 and "Voice requires" in reason


@pytest.mark.parametrize("mode", ["hang", "fail"])
async def test_an_unreachable_plan_service_is_1011_and_holds_up_nobody_else(
    serve: Serve, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with PlanStandin({}, mode=mode) as plans:  # type: ignore[arg-type]
        server = await serve(
            redis_enabled=False, plan_lookup_url=plans.url, plan_lookup_token=plans.token,
            plan_lookup_timeout_seconds=0.5, retry_max_attempts=2,
        )  # fmt: skip
        started = time.monotonic()
        waiting = asyncio.create_task(refused(server, make_token("no-plan", plan=None)))
        await asyncio.sleep(0.05)
        # Meanwhile, a user whose token carries a plan is admitted at once.
        other = await open_voice(server, make_token("has-plan"))
        if mode == "hang":  # the other admission was not held up by the pending lookup
            assert not waiting.done()
        await other.close()
        code, reason = await waiting
        assert (code, reason) == (1011, "Plan service unavailable")
        assert time.monotonic() - started < 5  # bounded: timeouts and retries, never a hang
    assert "Plan lookup failed" in caplog.text
    assert plans.token not in caplog.text
