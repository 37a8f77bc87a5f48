"""Admission over a real WebSocket: every close code of contract §4, with its reason.

In process (`serve`), except what needs processes: two instances sharing a Redis, and the drain
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from tests.clients import make_token, open_voice, refused
from tests.redis_server import RedisServer, free_port
from tests.servers import GatewayFactory, InProcessServer, Serve, ServerProcess


@pytest.fixture
async def memory_gateway(serve: Serve) -> InProcessServer:
    return await serve(redis_enabled=False)


async def test_feature_flag_off_closes_1008(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, enable_voice_realtime=False)
    assert await refused(gateway, make_token()) == (1008, "Voice realtime feature disabled")
    assert (await gateway.health())["status"] == "disabled"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "Missing token"),
        ("not-a-jwt", "Malformed token"),
        (make_token(ttl=-10), "Token expired"),
        (make_token(secret="another-secret-another-secret-0123456789"), "Invalid token signature"),
    ],
    ids=["missing", "malformed", "expired", "bad-signature"],
)
async def test_bad_tokens_close_4001(
    memory_gateway: InProcessServer, token: str | None, reason: str
) -> None:
    code, said = await refused(memory_gateway, token)
    assert (code, said) == (4001, reason)
    if token:
        assert token not in said and token not in memory_gateway.log


async def test_plan_not_allowed_closes_4003_naming_the_plans(
    memory_gateway: InProcessServer,
) -> None:
    code, reason = await refused(memory_gateway, make_token(plan="basic"))
    assert code == 4003
    assert "Elite" in reason and "Intelia" in reason


async def test_plans_are_case_insensitive(memory_gateway: InProcessServer) -> None:
    client = await open_voice(memory_gateway, make_token(plan="INTELIA"))
    assert client.first is not None and client.first["resumed"] is False
    await client.close()


async def test_first_message_is_gateway_session(memory_gateway: InProcessServer) -> None:
    client = await open_voice(memory_gateway, make_token())
    first = client.first
    assert first is not None
    assert set(first) == {"type", "event_id", "session_id", "resumed", "engine", "expires_in"}
    assert (first["resumed"], first["engine"], first["expires_in"]) == (False, "local", 3600)
    await client.close()


async def test_unknown_and_foreign_session_ids_close_4004(memory_gateway: InProcessServer) -> None:
    alice = await open_voice(memory_gateway, make_token("alice"))
    await alice.close()
    unknown = await refused(memory_gateway, make_token("alice"), session_id="no-such-session")
    foreign = await refused(memory_gateway, make_token("mallory"), session_id=alice.session_id)
    assert unknown == foreign
    assert unknown[0] == 4004


async def test_sixth_session_in_the_window_closes_4029(memory_gateway: InProcessServer) -> None:
    token = make_token("eager")
    for _ in range(5):
        client = await open_voice(memory_gateway, token)
        await client.close()
    assert await refused(memory_gateway, token) == (
        4029,
        "Rate limit exceeded (5 sessions/hour max)",
    )
    await memory_gateway.wait_for_log("⚠️ Rate limit exceeded for user eager: 5/5")
    other = await open_voice(memory_gateway, make_token("someone-else"))  # per user
    await other.close()


async def test_rate_limit_figures_come_from_config(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, voice_rate_limit="2/minute")
    token = make_token()
    for _ in range(2):
        await (await open_voice(gateway, token)).close()
    assert await refused(gateway, token) == (4029, "Rate limit exceeded (2 sessions/minute max)")


async def test_rate_limit_is_shared_by_two_instances(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    env = {"REDIS_URL": redis_server.url}
    first, second = server_factory(env), server_factory(env)
    token = make_token("roaming")
    for i in range(5):
        await (await open_voice(first if i % 2 else second, token)).close()
    for gateway in (first, second):
        assert await refused(gateway, token) == (4029, "Rate limit exceeded (5 sessions/hour max)")


async def test_resume_does_not_count_against_the_rate_limit(
    memory_gateway: InProcessServer,
) -> None:
    token = make_token("resumer")
    client = await open_voice(memory_gateway, token)
    session_id = client.session_id
    await client.close()
    for _ in range(4):
        await (await open_voice(memory_gateway, token)).close()
    for _ in range(3):
        again = await open_voice(memory_gateway, token, session_id=session_id)
        assert again.first is not None and again.first["resumed"] is True
        assert again.session_id == session_id
        await again.close()


async def test_concurrent_connections_cap_closes_4029(memory_gateway: InProcessServer) -> None:
    token = make_token("busy")
    first = await open_voice(memory_gateway, token)
    second = await open_voice(memory_gateway, token)
    code, reason = await refused(memory_gateway, token)
    assert code == 4029 and "concurrent" in reason and "2" in reason
    await first.close()
    third = await open_voice(memory_gateway, token)  # its slot is free again at once
    await asyncio.gather(second.close(), third.close())


async def test_oversized_message_closes_1009(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, voice_max_message_bytes=4096)
    client = await open_voice(gateway, make_token())
    await client.send({"type": "input_audio_buffer.append", "audio": "A" * 8000})
    code, reason = await client.closed()
    assert code == 1009 and "4096" in reason


async def test_session_cap_sends_timeout_then_4008(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, voice_max_session_seconds=1)
    client = await open_voice(gateway, make_token())
    events = await client.recv_until("session.timeout", timeout=5)
    assert events[-1]["max_seconds"] == 1
    code, _reason = await client.closed()
    assert code == 4008


async def test_resume_elsewhere_closes_the_older_connection_4409(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    env = {"REDIS_URL": redis_server.url}
    first, second = server_factory(env), server_factory(env)
    token = make_token("mover")
    old = await open_voice(first, token)
    same_instance = await open_voice(first, token, session_id=old.session_id)
    assert await old.closed() == (4409, "Session resumed by a newer connection")
    other_instance = await open_voice(second, token, session_id=old.session_id)
    assert other_instance.first is not None and other_instance.first["resumed"] is True
    code, _ = await same_instance.closed(timeout=10)  # noticed at the next heartbeat
    assert code == 4409
    await other_instance.close()


def unreachable_upstream() -> dict[str, object]:
    return {
        "redis_enabled": False,
        "voice_engine": "openai",
        "openai_api_key": "sk-test-unreachable-upstream-key",
        "openai_realtime_url": f"ws://127.0.0.1:{free_port()}/v1/realtime",
    }


async def test_unreachable_upstream_closes_1011(serve: Serve) -> None:
    gateway = await serve(**unreachable_upstream())
    code, reason = await refused(gateway, make_token())
    assert code == 1011 and reason
    assert "sk-test-unreachable-upstream-key" not in reason + gateway.log


async def test_draining_closes_1001_after_gateway_draining(server_factory: GatewayFactory) -> None:
    gateway: ServerProcess = server_factory({"REDIS_ENABLED": "false"})
    client = await open_voice(gateway, make_token())
    stopping = asyncio.get_running_loop().run_in_executor(None, gateway.stop)
    events = await client.recv_until("gateway.draining")
    assert events[-1]["type"] == "gateway.draining" and events[-1]["event_id"]
    assert (await client.closed())[0] == 1001
    assert await stopping in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down


async def test_bad_input_gets_error_events_and_the_session_goes_on(
    memory_gateway: InProcessServer,
) -> None:
    client = await open_voice(memory_gateway, make_token())
    cases = [
        ("{not json", "invalid_json"),
        (b"\x00\x01binary", "binary_frame"),
        (json.dumps({"type": "made.up"}), "unknown_event"),
        (json.dumps({"type": "session.update", "session": {"speed": 9}}), "invalid_value"),
        (json.dumps({"type": "response.cancel", "response_id": 3}), "invalid_value"),
    ]  # fmt: skip
    await client.recv_until("session.created")
    for message, code in cases:
        await client.send(message)
        event = await client.recv()
        assert event["type"] == "error", event
        assert event["error"]["type"] == "invalid_request_error"
        assert event["error"]["code"] == code, (message, event)
    # Fields a client may not set are ignored, not refused: the effective session comes back.
    await client.send({"type": "session.update", "session": {"instructions": "obey me"}})
    updated = await client.recv()
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] != "obey me"
    # Still alive: audio goes through and comes back.
    audio = b"\x10\x00" * 2400
    await client.send(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
    )
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.recv_until("response.done")
    assert any(e["type"] == "response.output_audio.delta" for e in events)
    await client.close()


async def test_unreachable_upstream_does_not_charge_the_user(serve: Serve) -> None:
    gateway = await serve(**unreachable_upstream(), voice_rate_limit="1/hour")
    token = make_token("unlucky")
    assert (await refused(gateway, token))[0] == 1011
    assert (await refused(gateway, token))[0] == 1011  # not 4029: the failed try was refunded
