"""Figures 4 and 5: the relay's frame round trip at N sessions, and its CPU per round trip.

Three targets see the same load from the same client process (`bench.load_client`):

    direct   the client talks to the stand-in upstream itself (the floor)
    gateway  `voicegate serve` in OpenAI mode (with Redis) relaying to the stand-in
    naive    `bench.naive_relay`, a json.loads-everything relay, relaying to the stand-in

and, with `--floors`, three stripped-down relays that tell what the software stack costs by
itself (`bench/floor_relays.py`): `fastapi` (a FastAPI endpoint passing text through, uvicorn
set up like the gateway), `asgi` (the same without FastAPI/Starlette) and `sansio` (no ASGI, no
tasks: websockets' sans-I/O protocols, each message forwarded in the callback that read it).

The stand-in, the relay and the client each run in their own process, so a relay process's
user+sys CPU during the measured window is its own work: the CPU per round trip is that ÷ the
frames answered in the window (each one message in and one out, both ways through the relay).

Every run starts fresh processes. Targets take turns at each session count; with `repeats` > 1
each is run again and the run with the lowest p99 is kept for latency (the least disturbed by
the neighbours: the same rule for every target), while CPU per round trip sums all runs.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import redis

from bench._procs import (
    JWT_SECRET,
    Child,
    cpu_seconds,
    gateway_env,
    running_gateway,
    running_redis,
    runqueue_wait_seconds,
)
from bench._stats import Row, fmt_ms, verdict

TARGETS = ("direct", "gateway", "naive")
FLOORS = ("fastapi", "asgi", "sansio")
RELAYS = ("gateway", "naive")
HELD_P99_MS = 50.0
MAX_LOST = 0.001  # a level is not "held" if more than 0.1 % of its frames never came back
CLOSE_TO_DIRECT_MS = 10.0  # "p99 close to direct": within half a 20 ms frame
CPU_TARGET = 0.20
HELD_TARGET = 4.0


@dataclass
class RelayPlan:
    """Session counts every target runs; `extra` only while a relay still holds its p99."""

    sessions: tuple[int, ...]
    extra: tuple[int, ...]
    repeats: int
    warmup: float
    window: float
    floors: bool = False


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
    """One load run against one target: the load client's JSON plus CPU figures."""
    with ExitStack() as stack:
        standin = stack.enter_context(Child("bench.standin"))
        upstream = standin.read_line(20)
        pids = {"standin": standin.pid}
        if target == "direct":
            url, gateway = upstream, False
        elif target == "gateway":
            env = gateway_env(redis_url, upstream_url=upstream)
            server = stack.enter_context(running_gateway(env))
            assert server.process is not None
            url, gateway, pids["relay"] = server.ws, True, server.process.pid
        else:
            module, args = ("bench.naive_relay", [upstream])
            if target in FLOORS:
                module, args = ("bench.floor_relays", [upstream, target])
            other = stack.enter_context(Child(module, *args))
            url, gateway, pids["relay"] = other.read_line(20), False, other.pid
            wait_for_port(url)
        redis_connections = _redis_connections(redis_url)
        args = [url, "--sessions", str(sessions), "--warmup", str(plan.warmup)]
        args += ["--window", str(plan.window)] + (["--gateway"] if gateway else [])
        client = stack.enter_context(
            Child("bench.load_client", *args, env={"BENCH_JWT_SECRET": JWT_SECRET})
        )
        client.expect("ready", 120)
        client.expect("start", 30)
        cpu = {name: -cpu_seconds(pid) for name, pid in pids.items()}
        waits = {name: -runqueue_wait_seconds(pid) for name, pid in pids.items()}
        client.expect("stop", plan.window + 30)
        for name, pid in pids.items():
            cpu[name] += cpu_seconds(pid)
            waits[name] += runqueue_wait_seconds(pid)
        result: dict[str, Any] = json.loads(client.read_line(60))
        if target == "gateway":
            # Redis connections the gateway opened during the run, and any warning it logged
            # (a Redis command over REDIS_OP_TIMEOUT_MS under load shows up here).
            opened = _redis_connections(redis_url)
            result["redis_connections_opened"] = opened - redis_connections
            problems = [line for line in server.log.splitlines() if _PROBLEM.search(line)]
            result["gateway_log_problems"] = {"count": len(problems), "first": problems[:5]}
    cpu["client"] = result.pop("client_cpu_s")
    result.update(target=target, cpu_s=cpu, runqueue_wait_s=waits)
    return result


_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) ")


def _redis_connections(redis_url: str) -> int:
    """Connections the Redis server has accepted so far."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


def _p99(run: dict[str, Any]) -> float:
    return float(run["rtt_ms"]["p99"]) if "rtt_ms" in run and run["rtt_ms"]["n"] else math.inf


def _holds(run: dict[str, Any] | None) -> bool:
    if run is None or "error" in run or not run["sent"]:
        return False
    return _p99(run) < HELD_P99_MS and run["lost"] <= MAX_LOST * run["sent"]


def run(plan: RelayPlan, log: Callable[[str], None]) -> dict[str, Any]:
    """Every target at every session count (smaller loads first), then the extra counts for
    the relays that still hold; the raw runs and, per target and count, the kept one."""
    runs: list[dict[str, Any]] = []
    with running_redis() as redis:

        def level(sessions: int, targets: tuple[str, ...]) -> None:
            for repeat in range(plan.repeats):
                for target in targets:
                    log(f"relay: {target} @ {sessions} sessions (run {repeat + 1})")
                    try:
                        result = run_one(target, sessions, plan, redis.url)
                    except RuntimeError as exc:
                        log(f"  failed: {str(exc)[:300]}")
                        result = {"target": target, "sessions": sessions, "error": str(exc)}
                    else:
                        rtt = result["rtt_ms"]
                        log(
                            f"  p50 {rtt['p50']:.2f} ms  p99 {rtt['p99']:.2f} ms  "
                            f"lost {result['lost']}  cpu {_fmt_cpu(result['cpu_s'])}"
                        )
                    runs.append(result)

        for sessions in plan.sessions:
            level(sessions, TARGETS + (FLOORS if plan.floors else ()))
        for sessions in plan.extra:
            best = kept(runs)
            holding = tuple(t for t in RELAYS if held(best, t)[1])  # held every count so far
            if not holding:
                break
            level(sessions, ("direct", *holding))
    return {"runs": runs}


def _fmt_cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in cpu.items())


def _levels(best: dict[tuple[str, int], dict[str, Any]], target: str) -> list[int]:
    return sorted(n for t, n in best if t == target)


def kept(runs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (target, sessions): the run with the lowest p99."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for r in runs:
        key = (r["target"], r["sessions"])
        if key not in best or _p99(r) < _p99(best[key]):
            best[key] = r
    return best


def cpu_per_round_trip(runs: list[dict[str, Any]], target: str, sessions: int) -> float:
    """Relay CPU seconds per answered frame, over every run of `target` at `sessions`."""
    mine = [r for r in runs if r["target"] == target and r["sessions"] == sessions]
    cpu = sum(r["cpu_s"]["relay"] for r in mine if "cpu_s" in r)
    answered = sum(r["received"] for r in mine if "cpu_s" in r)
    return cpu / answered if answered else math.nan


def held(best: dict[tuple[str, int], dict[str, Any]], target: str) -> tuple[int, bool]:
    """The largest session count held at p99 < 50 ms (every smaller one held too), and whether
    the largest count tried still held (then the figure is a lower bound)."""
    count = 0
    levels = _levels(best, target)
    for sessions in levels:
        if not _holds(best[(target, sessions)]):
            return count, False
        count = sessions
    return count, True


def summarize(result: dict[str, Any], main_levels: tuple[int, ...]) -> dict[str, Any]:
    runs = result["runs"]
    best = kept(runs)
    out: dict[str, Any] = {"held": {}, "cpu_us_per_round_trip": {}, "kept": {}}
    for target in RELAYS:
        count, open_ended = held(best, target)
        out["held"][target] = {"sessions": count, "lower_bound": open_ended}
    for target in RELAYS + FLOORS:
        out["cpu_us_per_round_trip"][target] = {
            n: cpu_per_round_trip(runs, target, n) * 1e6 for n in _levels(best, target)
        }
    order = TARGETS + FLOORS
    for (target, n), r in sorted(best.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))):
        out["kept"][f"{target}@{n}"] = r
    out["main_levels"] = list(main_levels)
    return out


def rows(summary: dict[str, Any]) -> list[Row]:
    kept_runs = summary["kept"]
    out = []
    for n in summary["main_levels"]:
        gw, direct, naive = (kept_runs.get(f"{t}@{n}") for t in ("gateway", "direct", "naive"))
        if gw is None or direct is None or naive is None or _p99(gw) == math.inf:
            out.append(Row(f"relay p99 @ {n} sessions", "failed", "", "", "", "FAIL"))
            continue
        g99, d99, n99 = _p99(gw), _p99(direct), _p99(naive)
        out.append(
            Row(
                f"relay round trip @ {n} sessions, p99 (p50)",
                f"{fmt_ms(g99)} ({fmt_ms(gw['rtt_ms']['p50'])})",
                f"direct {fmt_ms(d99)}; naive {fmt_ms(n99)}",
                f"{g99 / d99:.1f}× direct; {g99 / n99:.2f}× naive",
                f"≤ direct + {CLOSE_TO_DIRECT_MS:.0f} ms",
                verdict(g99 <= d99 + CLOSE_TO_DIRECT_MS),
            )
        )
    held_gw, held_naive = summary["held"]["gateway"], summary["held"]["naive"]

    def fmt_held(h: dict[str, Any]) -> str:
        return ("≥ " if h["lower_bound"] else "") + str(h["sessions"])

    if held_naive["sessions"]:
        ratio = held_gw["sessions"] / held_naive["sessions"]
        ratio_text = f"{'≥ ' if held_gw['lower_bound'] else ''}{ratio:.1f}×"
    else:
        ratio, ratio_text = (math.inf if held_gw["sessions"] else 0.0), "∞"
    out.append(
        Row(
            "sessions held at p99 < 50 ms", f"gateway {fmt_held(held_gw)}",
            f"naive {fmt_held(held_naive)}", ratio_text, f"≥ {HELD_TARGET:.0f}×",
            verdict(ratio >= HELD_TARGET if not held_naive["lower_bound"] else None),
        )
    )  # fmt: skip
    cpu = summary["cpu_us_per_round_trip"]
    for n in summary["main_levels"]:
        g, v = cpu["gateway"].get(n, math.nan), cpu["naive"].get(n, math.nan)
        out.append(
            Row(
                f"relay CPU per round trip @ {n} sessions", f"{g:.0f} µs",
                f"naive {v:.0f} µs", f"{g / v:.2f}", f"≤ {CPU_TARGET:.2f}",
                verdict(g / v <= CPU_TARGET if g == g and v == v else False),
            )
        )  # fmt: skip
    for n in summary["main_levels"]:
        floors = {t: cpu[t][n] for t in FLOORS if n in cpu.get(t, {})}
        v = cpu["naive"].get(n, math.nan)
        if floors:
            out.append(
                Row(
                    f"  stack floors, CPU per round trip @ {n}",
                    "; ".join(f"{t} {us:.0f} µs" for t, us in floors.items()),
                    f"naive {v:.0f} µs",
                    "; ".join(f"{us / v:.2f}" for us in floors.values()),
                    "info", "info",
                )
            )  # fmt: skip
    return out


def detail_table(summary: dict[str, Any]) -> str:
    """Every kept run: latencies, losses, and who used how much CPU."""
    header = (
        "sessions", "target", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "lost",
        "relay µs/rt", "relay CPU", "relay waited", "stand-in CPU", "client CPU", "send lag p99",
    )  # fmt: skip
    lines = [header]
    cpu = summary["cpu_us_per_round_trip"]
    for key, r in summary["kept"].items():
        target, n = key.split("@")
        if "error" in r:
            lines.append((n, target, "error", *[""] * (len(header) - 3)))
            continue
        window = r["window_s"]
        rtt = r["rtt_ms"]
        relay = r["cpu_s"].get("relay")
        lines.append(
            (
                n, target, f"{rtt['p50']:.2f}", f"{rtt['p99']:.2f}", f"{rtt['p999']:.2f}",
                f"{rtt['max']:.1f}", str(r["lost"]),
                f"{cpu[target][int(n)]:.0f}" if target in cpu else "-",
                f"{relay / window:.0%}" if relay is not None else "-",
                f"{r['runqueue_wait_s']['relay'] / window:.0%}" if relay is not None else "-",
                f"{r['cpu_s']['standin'] / window:.0%}", f"{r['cpu_s']['client'] / window:.0%}",
                f"{r['send_lag_ms']['p99']:.1f} ms",
            )
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)
