"""The original front-end, unchanged, against voicegate (issue 8).

`LegacyFrontEnd` has the exact wire behaviour of the original hook: only `?token=` in the URL,
`audio.input` chunks of 4096 samples, `interrupt`, `language.detected`, a fixed list of event
names it understands, and a reconnect 2 s after any close with the same URL.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from tests.clients import VoiceClient, make_token, open_voice, pcm
from tests.legacy_client import LegacyFrontEnd
from tests.redis_server import RedisServer
from tests.servers import InProcessServer, ServerProcess
from voicegate.voice.dialect import BETA_NAMES

Serve = Callable[..., "asyncio.Future[InProcessServer]"]
SPEECH = pcm(1.2) + pcm(0.7, amplitude=0)  # a turn the local engine's VAD commits by itself
GA_NAMES_WITH_BETA = {name.decode() for name in BETA_NAMES}


def sessions(front: LegacyFrontEnd) -> list[dict[str, Any]]:
    """The `gateway.session` events the front-end received (it ignores them as unknown)."""
    return [e for e in front.events if e.get("type") == "gateway.session"]


def url_for(ws_base: str, user: str) -> str:
    return f"{ws_base}?token={quote(make_token(user))}"


async def admissions_of(redis_url: str, user: str) -> int:
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match="vg:*admissions")]
        return sum([await client.zcard(key) for key in keys if user.encode() in key])
    finally:
        await client.aclose()


async def test_hears_the_echo_of_what_it_said_under_the_names_it_knows(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    front = LegacyFrontEnd(url_for(server.ws, "legacy-1"))
    await front.start()
    await front.speak(SPEECH)
    await front.wait_for(lambda: not front.speaking and len(front.heard) >= len(pcm(1.2)))
    # The engine answers with what it committed: the speech and the silence that ended it.
    assert front.heard == SPEECH[: len(front.heard)] and len(front.heard) >= len(pcm(1.2))
    assert front.transcripts == ["(1.7 seconds of audio)"]
    assert set(front.unknown) & GA_NAMES_WITH_BETA == set()
    assert front.errors_shown == []
    await front.stop()


async def test_interrupt_stops_the_answer_and_is_quiet_when_nothing_plays(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    front = LegacyFrontEnd(url_for(server.ws, "legacy-2"))
    await front.start()
    await front.interrupt()  # nothing plays yet: no error box
    long_turn = pcm(6) + pcm(0.7, amplitude=0)
    await front.speak(long_turn)
    await front.wait_for(lambda: len(front.heard) > 0)
    await front.interrupt()
    await front.wait_for(
        lambda: any(e.get("type") == "response.done" for e in front.events), timeout=10
    )
    done = next(e for e in front.events if e.get("type") == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert len(front.heard) < len(long_turn)
    assert front.errors_shown == []
    await front.stop()


async def test_a_restart_resumes_the_conversation_without_charging_the_limit(
    server_factory: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    # A limit of 2 sessions an hour: four restarts would have locked the user out before.
    gateway = server_factory({"REDIS_URL": redis_server.url, "VOICE_RATE_LIMIT": "2/hour"})
    front = LegacyFrontEnd(url_for(gateway.ws, "legacy-3"))
    await front.start()
    await front.speak(SPEECH)
    await front.wait_for(lambda: front.transcripts and not front.speaking)
    first = sessions(front)[0]
    loop = asyncio.get_running_loop()
    for restart in range(1, 5):
        opened, closed = front.opens, len(front.closes)
        stopping = loop.run_in_executor(None, gateway.stop)
        await front.wait_for(lambda n=closed: len(front.closes) > n, timeout=15)
        assert front.closes[closed][0] == 1001  # the drain's close: "come back"
        await stopping
        await loop.run_in_executor(None, gateway.start)
        await front.wait_for(lambda n=opened: len(sessions(front)) == n + 1, timeout=15)
        session = sessions(front)[-1]
        assert session["resumed"] is True, f"restart {restart}: {session}"
        assert session["session_id"] == first["session_id"]
        assert 4029 not in [code for code, _ in front.closes]
    assert await admissions_of(redis_server.url, "legacy-3") == 1
    # The conversation came back with the session: the engine replayed it on every resume.
    replayed = [
        e
        for e in front.events
        if e.get("type") in ("conversation.item.added", "conversation.item.created")
    ]
    assert any(e["item"].get("role") == "user" for e in replayed)
    await front.stop()


async def test_a_crash_resumes_too(
    server_factory: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url})
    front = LegacyFrontEnd(url_for(gateway.ws, "legacy-4"))
    await front.start()
    await front.speak(SPEECH)
    await front.wait_for(lambda: front.transcripts and not front.speaking)
    first = sessions(front)[0]
    gateway.stop(signal.SIGKILL)
    await front.wait_for(lambda: front.closes, timeout=15)
    assert front.closes[0][0] == 1006
    await asyncio.get_running_loop().run_in_executor(None, gateway.start)
    await front.wait_for(lambda: len(sessions(front)) == 2, timeout=15)
    session = sessions(front)[-1]
    assert (session["resumed"], session["session_id"]) == (True, first["session_id"])
    await front.stop()


async def test_a_client_that_closes_itself_ends_the_conversation(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    first = await open_voice(server, make_token("closer"))
    await first.close()  # a close frame from the client: the conversation is over
    again = await open_voice(server, make_token("closer"))
    assert again.first is not None and again.first["resumed"] is False
    assert again.session_id != first.session_id
    await again.close()


async def dropped(server: InProcessServer, *clients: VoiceClient) -> None:
    """Drop the clients' connections without a close frame (the network went away), and wait
    until the server has noticed."""
    live = server.app.state.voice.registry.connections
    ending = [live[client.session_id] for client in clients]
    for client in clients:
        client.ws.transport.abort()
    async with asyncio.timeout(5):
        for connection in ending:
            await connection.closed.wait()


async def test_a_dropped_connection_is_resumed_without_session_id(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    first = await open_voice(server, make_token("dropper"))
    await dropped(server, first)
    again = await open_voice(server, make_token("dropper"))
    assert again.first is not None
    assert (again.first["resumed"], again.session_id) == (True, first.session_id)
    await again.close()


async def test_two_tabs_resume_their_own_two_sessions_within_the_cap(serve: Serve) -> None:
    server = await serve(redis_enabled=False, voice_max_concurrent_per_user=2)
    tab_a = await open_voice(server, make_token("tabs"))
    tab_b = await open_voice(server, make_token("tabs"))
    await dropped(server, tab_a, tab_b)
    again = [await open_voice(server, make_token("tabs")) for _ in range(2)]
    assert {c.session_id for c in again} == {tab_a.session_id, tab_b.session_id}
    assert all(c.first is not None and c.first["resumed"] for c in again)
    # A third tab finds nothing to resume and the cap full.
    third = await open_voice(server, make_token("tabs"), expect_session=False)
    code, reason = await third.closed()
    assert code == 4029 and "concurrent" in reason
    # A live tab is never taken over by a new one: with room under the cap it gets a new session.
    await again[0].close()
    fresh = await open_voice(server, make_token("tabs"))
    assert fresh.first is not None and fresh.first["resumed"] is False
    for client in (again[1], fresh):
        await client.close()


async def test_a_resumed_session_keeps_the_names_the_front_end_knows(serve: Serve) -> None:
    server = await serve(redis_enabled=False)
    front = LegacyFrontEnd(url_for(server.ws, "legacy-5"))
    await front.start()
    await front.speak(SPEECH)
    await front.wait_for(lambda: front.transcripts and not front.speaking)
    first = sessions(front)[0]
    live = server.app.state.voice.registry.connections[first["session_id"]]
    assert front._ws is not None
    front._ws.transport.abort()  # the network went away: no close frame, the session waits
    async with asyncio.timeout(5):
        await live.closed.wait()

    def replayed() -> list[str]:
        """The types of the user's turn replayed on the new connection, under any name."""
        resumed = [i for i, e in enumerate(front.events) if e.get("type") == "gateway.session"]
        return [
            e["type"]
            for e in front.events[resumed[-1] :]
            if e.get("type") in ("conversation.item.created", "conversation.item.added")
            and e["item"].get("role") == "user"
        ]

    await front.wait_for(lambda: len(sessions(front)) == 2 and replayed(), timeout=15)
    second = sessions(front)[1]
    assert (second["resumed"], second["session_id"]) == (True, first["session_id"])
    # The replay comes before the front-end says anything on its new connection: the session,
    # not only the connection, remembers that its client speaks the beta names.
    assert replayed() == ["conversation.item.created"]
    assert set(front.unknown) & GA_NAMES_WITH_BETA == set(), front.unknown
    await front.stop()
