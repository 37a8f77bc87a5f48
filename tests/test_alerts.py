"""Alerts: the health report's `alerts` against a real Redis, and deploy/prometheus-rules.yml."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client.metrics import MetricWrapperBase

from tests.redis_server import RedisServer
from tests.servers import InProcessServer, Serve
from tests.test_metrics import eventually
from voicegate.ops import metrics
from voicegate.ops.health import THRESHOLDS

RULES = Path(__file__).parent.parent / "deploy" / "prometheus-rules.yml"
# The rules that carry the health report's thresholds.
THRESHOLD_OF = {
    "VoicegateRedisMemoryHigh": "redis_memory_percent",
    "VoicegateRedisClientsHigh": "redis_connected_clients",
    "VoicegateRedisLatencyHigh": "redis_latency_ms",
}
_SELECTOR = re.compile(r"\b(voicegate_[a-z_]+)(?:\{([^}]*)\})?")
_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*=~?")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def exposed() -> dict[str, MetricWrapperBase]:
    """Every sample name voicegate exposes -> its metric (`_total`, `_bucket`, … included)."""
    names: dict[str, MetricWrapperBase] = {}
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                for suffix in suffixes[family.type]:
                    names[family.name + suffix] = metric
    return names


# -- the health report against a real Redis ----------------------------------------------------


async def test_health_lists_the_crossed_thresholds(redis_server: RedisServer, serve: Serve) -> None:
    # In process: the figures read here are gauges the server's sampler sets, not counters that
    # other tests' servers in this process would have added to.
    gateway = await serve(
        redis_url=redis_server.url, metrics_sample_seconds=0.2,
        redis_op_timeout_ms=5000,  # the frozen PING below must be measured, not abandoned
    )  # fmt: skip
    assert (await gateway.health())["alerts"] == []
    admin = aioredis.from_url(redis_server.url)
    crowd = [aioredis.from_url(redis_server.url) for _ in range(11)]
    try:
        await asyncio.gather(*(client.ping() for client in crowd))  # 12+ clients with the gateway
        used = (await admin.info("memory"))["used_memory"]
        await admin.config_set("maxmemory", int(used / 0.9))  # ~90 % used, writes still pass
        pid = redis_server._process.pid  # type: ignore[union-attr]
        async with httpx.AsyncClient(timeout=10) as http:
            os.kill(pid, signal.SIGSTOP)  # every command waits: the PING's round trip grows
            try:
                request = asyncio.create_task(http.get(f"{gateway.http}/api/v1/voice/health"))
                await asyncio.sleep(0.5)  # how long Redis stays frozen: the latency to detect
            finally:
                os.kill(pid, signal.SIGCONT)
            report = (await request).json()
        alerts = {alert["name"]: alert for alert in report["alerts"]}
        assert set(alerts) == set(THRESHOLDS)
        for name, alert in alerts.items():
            assert set(alert) == {"name", "value", "threshold"}
            assert alert["threshold"] == THRESHOLDS[name]
            assert alert["value"] > alert["threshold"], alert
        assert alerts["redis_connected_clients"]["value"] == report["redis"]["connected_clients"]
        assert alerts["redis_connected_clients"]["value"] >= 12
        assert alerts["redis_latency_ms"]["value"] == report["redis"]["latency_ms"] >= 300
        assert report["status"] == "healthy"  # slow and crowded, still served by Redis
        # The sampled gauges behind the Prometheus rules cross the same thresholds.
        m = await eventually(
            gateway,
            lambda m: (
                m.get("voicegate_redis_connected_clients", 0) >= 12
                and m.get("voicegate_redis_maxmemory_bytes", 0) > 0
            ),
        )
        percent = (
            100 * m["voicegate_redis_used_memory_bytes"] / m["voicegate_redis_maxmemory_bytes"]
        )
        assert percent > THRESHOLDS["redis_memory_percent"]
    finally:
        await asyncio.gather(*(client.aclose() for client in crowd))
        await admin.config_set("maxmemory", 0)
        await admin.aclose()
    assert await _alerts_clear(gateway)


async def _alerts_clear(gateway: InProcessServer, timeout: float = 10) -> bool:
    async with asyncio.timeout(timeout):
        while (await gateway.health())["alerts"]:
            await asyncio.sleep(0.05)  # Redis drops closed clients from its count on its own
    return True


# -- the Prometheus rules ----------------------------------------------------------------------


def test_rules_use_existing_metrics_and_the_health_thresholds() -> None:
    known = exposed()
    found = rules()
    assert {rule["alert"] for rule in found} >= {
        *THRESHOLD_OF,
        "VoicegateRedisFallback",
        "VoicegateRateLimitSpike",
    }
    for rule in found:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        selectors = _SELECTOR.findall(rule["expr"])
        assert selectors, f"{rule['alert']} uses no voicegate metric"
        for name, matchers in selectors:
            assert name in known, f"{rule['alert']}: no metric {name} in voicegate.ops.metrics"
            for label in _LABEL.findall(matchers):
                assert label in known[name]._labelnames, f"{rule['alert']}: {name} has no {label}"
    for alert, key in THRESHOLD_OF.items():
        expr = next(rule["expr"] for rule in found if rule["alert"] == alert)
        threshold = re.search(r">\s*([\d.]+)\s*$", expr)
        assert threshold is not None, expr
        assert float(threshold[1]) == THRESHOLDS[key], f"{alert} ({expr}) vs health {key}"
    spike = next(rule["expr"] for rule in found if rule["alert"] == "VoicegateRateLimitSpike")
    assert 'rate(voicegate_sessions_rejected_total{reason="rate_limit"}[5m])' in spike


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return found


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _fleet(above: bool) -> list[dict[str, str]]:
    """Input series of one gateway instance: just over every threshold, or right on them."""
    over = 1 if above else 0
    percent = THRESHOLDS["redis_memory_percent"] + over
    series = {
        'voicegate_redis_maxmemory_bytes{instance="gw1"}': 1000,
        'voicegate_redis_used_memory_bytes{instance="gw1"}': percent * 10,
        'voicegate_redis_connected_clients{instance="gw1"}': THRESHOLDS["redis_connected_clients"]
        + over,
        'voicegate_redis_latency_ms{instance="gw1"}': THRESHOLDS["redis_latency_ms"] + over,
        'voicegate_redis_fallback{instance="gw1"}': over,
    }
    inputs = [{"series": name, "values": f"{value:g}x30"} for name, value in series.items()]
    per_minute = 10 if above else 5  # the spike rule's threshold is 0.1/s, 6 a minute
    inputs.append({
        "series": 'voicegate_sessions_rejected_total{instance="gw1",reason="rate_limit"}',
        "values": f"0+{per_minute}x30",
    })  # fmt: skip
    failures = 'voicegate_upstream_failures_total{cause="rejected",engine="openai",instance="gw1"}'
    inputs.append({"series": failures, "values": "0+1x30" if above else "0x30"})
    return inputs


def test_rules_fire_above_the_thresholds_and_not_on_them(promtool: str, tmp_path: Path) -> None:
    warn, crit = {"severity": "warning"}, {"severity": "critical"}
    firing = {
        "VoicegateRedisMemoryHigh": {**warn, "instance": "gw1"},
        "VoicegateRedisClientsHigh": {**warn, "instance": "gw1"},
        "VoicegateRedisLatencyHigh": {**warn, "instance": "gw1"},
        "VoicegateRedisFallback": {**crit, "instance": "gw1"},
        "VoicegateRateLimitSpike": warn,
        "VoicegateUpstreamFailing": {**crit, "engine": "openai", "cause": "rejected"},
    }

    def alerts(names: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
        def labels(name: str, extra: dict[str, str]) -> str:
            pairs = {"alertname": name, "alertstate": "firing", **extra}
            return "ALERTS{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"

        return [{"labels": labels(name, extra), "value": 1} for name, extra in names.items()]

    def case(above: bool, expected: list[dict[str, Any]]) -> dict[str, Any]:
        query = {"expr": 'ALERTS{alertstate="firing"}', "eval_time": "20m", "exp_samples": expected}
        return {"interval": "1m", "input_series": _fleet(above), "promql_expr_test": [query]}

    unlimited = case(
        True, alerts({k: v for k, v in firing.items() if k != "VoicegateRedisMemoryHigh"})
    )
    unlimited["input_series"][0]["values"] = "0x30"  # maxmemory 0: no limit, no memory alert
    suite = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [case(True, alerts(firing)), case(False, []), unlimited],
    }
    tests = tmp_path / "rules-test.yml"
    tests.write_text(yaml.safe_dump(suite, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
