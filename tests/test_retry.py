"""The shared backoff: full jitter under an exponential ceiling, retrying only what may pass."""

from __future__ import annotations

import pytest

from voicegate._retry import Backoff, backoff_ceiling, backoff_delay, retry


def test_ceiling_grows_and_is_capped() -> None:
    assert [backoff_ceiling(n, 0.1, 2.0, 0.5) for n in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff_ceiling(10_000, 1.0, 60.0, 30.0) == 30.0  # no OverflowError


def test_delays_are_jittered_within_the_ceiling() -> None:
    delays = [backoff_delay(3, 0.1, 2.0, 10.0) for _ in range(200)]
    assert all(0.0 <= d <= 0.8 for d in delays)
    assert len(set(delays)) > 100  # full jitter, not a fixed schedule


def test_backoff_gives_one_delay_fewer_than_attempts() -> None:
    assert len(list(Backoff(attempts=4).delays())) == 3
    assert list(Backoff(attempts=1).delays()) == []


async def test_retry_until_success() -> None:
    calls: list[int] = []
    seen: list[tuple[int, str]] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"down {len(calls)}")
        return "up"

    result = await retry(
        flaky,
        Backoff(attempts=3, base=0.001, cap=0.002),
        retry_on=(ConnectionError,),
        on_retry=lambda attempt, exc, delay: seen.append((attempt, str(exc))),
    )
    assert result == "up"
    assert seen == [(1, "down 1"), (2, "down 2")]


async def test_retry_gives_up_with_the_last_error() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"down {calls}")

    with pytest.raises(ConnectionError, match="down 3"):
        await retry(down, Backoff(attempts=3, base=0.001, cap=0.002), retry_on=(ConnectionError,))
    assert calls == 3


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise PermissionError("bad key")

    with pytest.raises(PermissionError):
        await retry(refused, Backoff(attempts=5, base=0.001), retry_on=(ConnectionError,))
    assert calls == 1
