"""`voicegate verify --monitoring`: the guide's 24-hour checks on a real gateway's own figures.

The gateways are processes of their own: the checks read counters (Redis errors, fallbacks)
that must start at zero, and prometheus-client's registry is process-wide.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from tests.redis_server import RedisServer
from tests.servers import TEST_JWT_SECRET, GatewayFactory, ServerProcess
from tests.test_metrics import eventually
from tests.test_verify import checklist, verify_process
from voicegate.cli._gateway import Failed
from voicegate.cli._monitoring import Judge, Reading

MONITORING = ["Redis ops/s", "Redis memory", "Redis latency", "Redis errors"]


async def monitor(gateway: ServerProcess, seconds: str = "2") -> tuple[int, dict[str, str], str]:
    done = await verify_process(
        gateway.http, "--jwt-secret", TEST_JWT_SECRET, "--monitoring", "--monitoring-seconds",
        seconds,
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, checklist(done.stdout), done.stdout


async def test_a_healthy_gateway_passes_the_24_hour_checks(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    with redis.Redis(port=redis_server.port) as admin:
        admin.config_set("maxmemory", 256 * 1024 * 1024)
    gateway = server_factory({"REDIS_URL": redis_server.url, "METRICS_SAMPLE_SECONDS": "0.2"})
    code, checks, output = await monitor(gateway)
    assert code == 0, output
    assert list(checks)[-4:] == MONITORING
    assert re.fullmatch(
        r"✅ Redis ops/s: stable, median [\d.]+ ops/s \([\d.]+–[\d.]+ ops/s over 2 s, \d+ "
        r"readings; the gateway's own operations [\d.]+/s\)",
        checks["Redis ops/s"],
    ), output
    assert re.fullmatch(
        r"✅ Redis memory: [\d.]+ % of maxmemory \([\d.]+ MiB of 256\.0 MiB\), under 50 %",
        checks["Redis memory"],
    ), output
    assert re.fullmatch(
        r"✅ Redis latency: median [\d.]+ ms, under 10 ms \(max [\d.]+ ms over \d+ timed PINGs; "
        r"the gateway's own operations [\d.]+ ms on average\)",
        checks["Redis latency"],
    ), output
    assert re.fullmatch(
        r"✅ Redis errors: none during the 2 s window; 0 failed Redis operations and 0 outages "
        r"since start \(\d+ min ago\)",
        checks["Redis errors"],
    ), output
    assert "⏳ Monitoring: reading the gateway's figures for 2 s" in output


async def test_an_ongoing_outage_fails_the_redis_checks(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url, "METRICS_SAMPLE_SECONDS": "0.2"})
    redis_server.stop()
    await eventually(gateway, lambda m: m["voicegate_redis_fallback"] == 1)
    code, checks, output = await monitor(gateway, "1")
    assert code == 1
    assert checks["Redis ops/s"] == (
        "❌ Redis ops/s: no reading: Redis was unreachable for the whole window"
    )
    assert checks["Redis memory"] == (
        "❌ Redis memory: no reading: Redis unreachable at the end of the window"
    )
    assert checks["Redis latency"] == (
        "❌ Redis latency: no timed PING in the health reports: Redis unreachable"
    )
    assert re.fullmatch(
        r"❌ Redis errors: serving from memory now \(Redis unavailable\); [1-9]\d* failed Redis "
        r"operations and 1 outage since start \(\d+ min ago\)",
        checks["Redis errors"],
    ), output


async def test_repeated_outages_and_no_maxmemory_fail_with_their_reasons(
    server_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    gateway = server_factory({"REDIS_URL": redis_server.url, "METRICS_SAMPLE_SECONDS": "0.2"})
    for outage in (1, 2):  # down and back, twice: both recovered
        redis_server.stop()
        await eventually(gateway, lambda m, n=outage: m["voicegate_redis_fallbacks_total"] == n)
        redis_server.start()
        await eventually(gateway, lambda m: m["voicegate_redis_fallback"] == 0, timeout=20)
    code, checks, output = await monitor(gateway, "1")
    assert code == 1
    assert checks["Health"].startswith("✅"), output  # Redis serves again …
    assert checks["Redis errors"].startswith("❌ Redis errors: repeated: "), output  # … but
    assert "operations and 2 outages since start" in checks["Redis errors"]
    assert checks["Redis errors"].endswith(
        "the gateway's log has a `❌ Redis connection failed` line for each outage"
    )
    assert gateway.log.count("❌ Redis connection failed") == 2
    assert re.fullmatch(
        r"❌ Redis memory: [\d.]+ MiB used, but Redis has no maxmemory: there is nothing to be "
        r"under 50 % of, and the 80 % alert can never fire; set maxmemory on Redis",
        checks["Redis memory"],
    ), output


# -- the judgements on their own, on readings made up to cross each line -----------------------


def readings(**changes: Any) -> list[Reading]:
    """Six readings of a healthy gateway over 5 s; `changes` replace some of the figures."""
    made = []
    for index in range(6):
        metrics = {
            "voicegate_redis_ops_per_second": 40.0 + index,
            "voicegate_redis_used_memory_bytes": 30e6,
            "voicegate_redis_maxmemory_bytes": 100e6,
            "voicegate_redis_errors_total": 0.0,
            "voicegate_redis_fallbacks_total": 0.0,
            "voicegate_redis_command_seconds_count": 10.0 * index,
            "voicegate_redis_command_seconds_sum": 0.01 * index,
        }
        redis_report = {"redis_enabled": True, "using_fallback": False, "latency_ms": 0.5}
        for name, values in changes.items():
            target = redis_report if name in redis_report else metrics
            target[name] = values[index] if isinstance(values, list) else values
        made.append(Reading(float(index), {"redis": redis_report}, metrics))
    return made


def test_the_made_up_healthy_readings_pass() -> None:
    judge = Judge(readings())
    assert judge.ops() == (
        "stable, median 42.5 ops/s (40.0–45.0 ops/s over 5 s, 6 readings; the gateway's own "
        "operations 10.0/s)"
    )
    assert judge.memory() == "30.0 % of maxmemory (28.6 MiB of 95.4 MiB), under 50 %"
    assert judge.latency() == (
        "median 0.50 ms, under 10 ms (max 0.50 ms over 6 timed PINGs; the gateway's own "
        "operations 1.00 ms on average)"
    )
    assert judge.errors() == (
        "none during the 5 s window; 0 failed Redis operations and 0 outages since start"
    )


@pytest.mark.parametrize(
    ("check", "changes", "reason"),
    [
        ("ops", {"voicegate_redis_ops_per_second": [40, 40, 40, 41, 40, 200]},
         "unstable: 40.0–200.0 ops/s over 5 s, 6 readings, median 40.0: a reading beyond"),
        ("ops", {"voicegate_redis_ops_per_second": [400, 400, 400, 5, 5, 5]}, "unstable: "),
        ("memory", {"voicegate_redis_used_memory_bytes": 55e6},
         "55.0 % of maxmemory (52.5 MiB of 95.4 MiB): not under the guide's 50 %"),
        ("latency", {"latency_ms": [12, 11, 12, 13, 0.5, 12]},
         "median 12.00 ms, not under the guide's 10 ms (max 13.00 ms over 6 timed PINGs"),
        ("errors", {"voicegate_redis_errors_total": [1, 1, 1, 2, 3, 3],
                    "voicegate_redis_fallbacks_total": 1},
         "2 Redis operations failed during the 5 s window; 3 failed Redis operations and 1 "
         "outage since start"),
        ("errors", {"voicegate_redis_errors_total": [9, 9, 0, 0, 9, 9]},
         "the counters went backwards: the gateway restarted, or BASE_URL reaches several"),
        ("errors", {"redis_enabled": False}, "Redis disabled (REDIS_ENABLED=false)"),
    ],
    ids=["spike", "drop", "memory", "latency", "new-errors", "backwards", "disabled"],
)  # fmt: skip
def test_each_judgement_fails_with_its_reason(
    check: str, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Failed) as failed:
        getattr(Judge(readings(**changes)), check)()
    assert str(failed.value).startswith(reason), failed.value


def test_without_metrics_the_figures_read_there_fail_but_the_latency_does_not() -> None:
    blocked = readings()
    for reading in blocked:
        reading.metrics, reading.metrics_status = {}, 404
    judge = Judge(blocked)
    for check in (judge.ops, judge.memory, judge.errors):
        with pytest.raises(Failed, match=r"^GET /metrics answered 404: these figures are read"):
            check()
    assert judge.latency().startswith("median 0.50 ms, under 10 ms (max 0.50 ms over 6 timed")
