"""Figures 4 and 5: the relay's frame round trip at N sessions, and its CPU per round trip.

Three targets see the same load from the same client process (`bench.load_client`):

    direct   the client talks to the stand-in upstream itself (the floor)
    gateway  `voicegate serve` in OpenAI mode (with Redis) relaying to the stand-in
    naive    `bench.naive_relay`, a json.loads-everything relay, relaying to the stand-in

The stand-in, the relay and the client each run in their own process, so a relay process's
user+sys CPU during the measured window is its own work: the CPU per round trip is that ÷ the
frames answered in the window (each one message in and one out, both ways through the relay).
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from bench._procs import (
    JWT_SECRET,
    Child,
    cpu_seconds,
    gateway_env,
    running_gateway,
    running_redis,
)

TARGETS = ("direct", "gateway", "naive")


@dataclass
class RelayPlan:
    sessions: tuple[int, ...]
    warmup: float
    window: float


def wait_for_port(url: str, timeout: float = 20) -> None:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not listening within {timeout} s")


def run_one(target: str, sessions: int, plan: RelayPlan, redis_url: str) -> dict[str, Any]:
    """One load run against one target; the JSON of the load client plus CPU figures."""
    with ExitStack() as stack:
        standin = stack.enter_context(Child("bench.standin"))
        upstream = standin.read_line(20)
        relay_pid: int | None = None
        if target == "direct":
            url, gateway = upstream, False
        elif target == "gateway":
            env = gateway_env(redis_url, upstream_url=upstream)
            server = stack.enter_context(running_gateway(env))
            assert server.process is not None
            url, gateway, relay_pid = server.ws, True, server.process.pid
        else:
            naive = stack.enter_context(Child("bench.naive_relay", upstream))
            url = naive.read_line(20)
            wait_for_port(url)
            url, gateway, relay_pid = url, False, naive.pid
        args = [url, "--sessions", str(sessions), "--warmup", str(plan.warmup)]
        args += ["--window", str(plan.window)] + (["--gateway"] if gateway else [])
        client = stack.enter_context(
            Child("bench.load_client", *args, env={"BENCH_JWT_SECRET": JWT_SECRET})
        )
        client.expect("ready", 120)
        client.expect("start", 30)
        before = {"standin": cpu_seconds(standin.pid)}
        if relay_pid is not None:
            before["relay"] = cpu_seconds(relay_pid)
        started = time.perf_counter()
        client.expect("stop", plan.window + 30)
        elapsed = time.perf_counter() - started
        after = {"standin": cpu_seconds(standin.pid)}
        if relay_pid is not None:
            after["relay"] = cpu_seconds(relay_pid)
        result: dict[str, Any] = json.loads(client.read_line(60))
    result["target"] = target
    result["cpu_s"] = {name: after[name] - before[name] for name in before}
    result["cpu_s"]["client"] = result.pop("client_cpu_s")
    result["cpu_window_s"] = elapsed
    answered = result["received"]
    if relay_pid is not None and answered:
        result["relay_cpu_us_per_round_trip"] = result["cpu_s"]["relay"] / answered * 1e6
    return result


def run(plan: RelayPlan, log: Any) -> list[dict[str, Any]]:
    """Every target at every session count, smaller loads first; a list of run results."""
    results = []
    with running_redis() as redis:
        for sessions in plan.sessions:
            for target in TARGETS:
                log(f"relay: {target} @ {sessions} sessions")
                try:
                    result = run_one(target, sessions, plan, redis.url)
                except RuntimeError as exc:
                    log(f"relay: {target} @ {sessions} failed: {exc}")
                    result = {"target": target, "sessions": sessions, "error": str(exc)[:2000]}
                else:
                    rtt = result["rtt_ms"]
                    log(
                        f"  p50 {rtt['p50']:.2f} ms, p99 {rtt['p99']:.2f} ms, "
                        f"lost {result['lost']}, cpu {result['cpu_s']}"
                    )
                results.append(result)
    return results
