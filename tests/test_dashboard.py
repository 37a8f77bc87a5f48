"""deploy/grafana-dashboard.json: importable, every query valid PromQL over metrics that a live
gateway exposes, and the guide's thresholds drawn where the health report uses them."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.clients import b64, make_token, open_voice, pcm
from tests.redis_server import RedisServer
from tests.servers import InProcessServer
from tests.test_alerts import exposed
from voicegate.ops.health import THRESHOLDS

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's variables, replaced as Grafana would before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h",
                     "$instance": ".*"}  # fmt: skip
# Labels Prometheus adds to every series it scrapes, and the histogram's bucket label.
SCRAPE_LABELS = {"instance", "job", "le"}
# Which panel carries which of the health report's thresholds: the metrics it queries, its unit.
USED, MAX = "voicegate_redis_used_memory_bytes", "voicegate_redis_maxmemory_bytes"
THRESHOLD_PANELS = {
    "redis_memory_percent": ({USED, MAX}, "percent"),
    "redis_connected_clients": ({"voicegate_redis_connected_clients"}, "short"),
    "redis_latency_ms": (
        {"voicegate_redis_latency_ms", "voicegate_redis_command_seconds_bucket"},
        "ms",
    ),
}


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def graphs() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def parsed(expr: str) -> promql_parser.Expr:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return promql_parser.parse(expr)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every metric selector in `expr` (raises if `expr` is not valid PromQL)."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(parsed(expr), visit)
    return found


def grouping_labels(expr: str) -> set[str]:
    """The labels of every `by (…)` clause in `expr`."""
    labels: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)

    promql_parser.walk(parsed(expr), visit)
    return labels


def metrics_of(panel: dict[str, Any]) -> set[str]:
    return {s.name for t in panel["targets"] for s in selectors(t["expr"]) if s.name}


def identity(panel: dict[str, Any]) -> tuple[set[str], str]:
    return metrics_of(panel), panel["fieldConfig"]["defaults"]["unit"]


def live_sample_names(text: str) -> set[str]:
    """The series names a scrape of `text` gives Prometheus, for families with samples or not
    (a labelled counter with no child yet is announced by its HELP and TYPE lines)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_the_dashboard_is_importable_with_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "voicegate" and board["title"] and board.get("id") is None
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["datasource"] == DATASOURCE
    assert re.fullmatch(r"label_values\(voicegate_\w+, instance\)",
                        variables["instance"]["query"]["query"])  # fmt: skip
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in graphs():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert '{instance=~"$instance"}' in target["expr"], target["expr"]
    titles = {panel["title"] for panel in graphs()}
    assert {"Voice sessions open", "Refusals by reason", "Relay traffic", "Redis latency",
            "Redis memory", "Redis connected clients", "Memory fallback and Redis errors",
            "Engine connections and failures"} <= titles  # fmt: skip


async def test_every_metric_a_panel_queries_is_in_a_live_metrics(
    serve: Callable[..., Awaitable[InProcessServer]], redis_server: RedisServer
) -> None:
    server = await serve(redis_url=redis_server.url, metrics_sample_seconds=0.2)
    client = await open_voice(server, make_token("dashboard"))  # traffic, for the counters
    await client.send({"type": "input_audio_buffer.append", "audio": b64(pcm(0.2))})
    await client.send({"type": "input_audio_buffer.commit"})
    await client.recv_until("response.done")
    await client.close()
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{server.http}/metrics")
    assert response.status_code == 200
    live = live_sample_names(response.text)
    labels_of = {name: set(metric._labelnames) for name, metric in exposed().items()}
    variable_query = dashboard()["templating"]["list"][1]["query"]["query"]
    queried = {re.findall(r"label_values\((\w+)", variable_query)[0]}
    for panel in graphs():
        for target in panel["targets"]:
            expr = target["expr"]
            for selector in selectors(expr):
                name = selector.name
                assert name is not None and name.startswith("voicegate_"), expr
                assert name in live, f"{panel['title']}: {name} is not in a live /metrics"
                queried.add(name)
                for matcher in selector.matchers.matchers:
                    assert matcher.name in labels_of[name] | SCRAPE_LABELS, (name, matcher.name)
            used = set().union(*(labels_of[s.name] for s in selectors(expr) if s.name))
            assert grouping_labels(expr) <= used | SCRAPE_LABELS, expr
    assert queried <= live
    # Every family the dashboard is meant to show is on it.
    for family in ("sessions_active", "sessions_rejected_total", "relay_bytes_total",
                   "upstream_failures_total", "redis_latency_ms", "redis_used_memory_bytes",
                   "redis_connected_clients", "redis_fallback", "redis_errors_total",
                   "redis_fallbacks_total"):  # fmt: skip
        assert f"voicegate_{family}" in queried, family


@pytest.mark.parametrize("key", sorted(THRESHOLDS))
def test_the_guides_thresholds_are_drawn_on_their_panels(key: str) -> None:
    [panel] = [p for p in graphs() if identity(p) == THRESHOLD_PANELS[key]]
    defaults = panel["fieldConfig"]["defaults"]
    steps = defaults["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, THRESHOLDS[key]], panel["title"]
    assert steps[-1]["color"] == "red"
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed", "line+area")


def test_no_other_panel_draws_a_threshold() -> None:
    carriers = list(THRESHOLD_PANELS.values())
    for panel in graphs():
        if identity(panel) not in carriers:
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults["custom"]["thresholdsStyle"]["mode"] == "off", panel["title"]
            assert len(defaults["thresholds"]["steps"]) == 1, panel["title"]
