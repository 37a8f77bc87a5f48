"""Figures 4 and 5: the relay's frame round trip at N sessions, and its CPU per round trip.

Five targets see the same load from the same client process (`bench.load_client`):

    direct   the client talks to the stand-in upstream itself (the floor)
    gateway  `voicegate serve` in OpenAI mode (with Redis) relaying to the stand-in
    naive    `bench.naive_relay`, a json.loads-everything relay, relaying to the stand-in
    node     `bench/node_relay.mjs`, a Node.js `ws` pass-through relay (native bufferutil and
             utf-8-validate: the stack of OpenAI's relay examples; `bench.node_baseline`)
    picows   `bench.picows_relay`, a picows (Cython) pass-through relay on uvloop

with `--workers N` a sixth, `gateway-wN` (`voicegate serve --workers N`, the CPU of the parent
and all its workers), and, with `--floors`, three stripped-down relays that tell what the
software stack costs by itself (`bench/floor_relays.py`): `fastapi` (a FastAPI endpoint passing
text through, uvicorn set up like the gateway), `asgi` (the same without FastAPI/Starlette) and
`sansio` (no ASGI, no tasks: websockets' sans-I/O protocols, each message forwarded in the
callback that read it).

The stand-in, the relay and the client each run in their own process, so a relay process's
user+sys CPU during the measured window is its own work: the CPU per round trip is that ÷ the
frames answered in the window (each one message in and one out, both ways through the relay).
The relay's CPU is summed over its process tree (itself and any children: the workers of
`serve --workers N`); every other relay is a single process.

Every run starts fresh processes. Targets take turns at each session count; with `repeats` > 1
each is run again and the run with the lowest p99 is kept for latency (the least disturbed by
the neighbours: the same rule for every target), while CPU per round trip sums all runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import redis

from bench import node_baseline
from bench._procs import (
    JWT_SECRET,
    Child,
    gateway_env,
    running_gateway,
    running_redis,
    runqueue_wait_seconds,
    tree_cpu_seconds,
)
from bench._stats import Row, fmt_ms, verdict

TARGETS = ("direct", "gateway", "naive", "node", "picows")
BASELINES = ("node", "picows")  # pass-through relays in every run, beside the naive one
FLOORS = ("fastapi", "asgi", "sansio")
RELAYS = ("gateway", "naive")
HELD_P99_MS = 50.0
MAX_LOST = 0.001  # a level is not "held" if more than 0.1 % of its frames never came back
CLOSE_TO_DIRECT_MS = 5.0  # "p99 close to direct": within 5 ms (issue 11)
CPU_TARGET = 0.35  # gateway ÷ naive
CPU_NODE_TARGET = 1.0  # gateway ÷ node: at or below the Node relay's
CPU_TARGET_FROM = 50  # the CPU targets hold at 50 sessions and more; smaller counts are info
WORKERS_TARGET = 1.15  # "CPU per frame unchanged" with N workers: our reading, within 15 %
HELD_TARGET = 4.0


def workers_target(workers: int) -> str:
    return f"gateway-w{workers}"


@dataclass
class RelayPlan:
    """Session counts every target runs; `extra` only while a relay still holds its p99."""

    sessions: tuple[int, ...]
    extra: tuple[int, ...]
    repeats: int
    warmup: float
    window: float
    floors: bool = False
    workers: int | None = None  # also run `voicegate serve --workers N` as `gateway-wN`


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


def run_one(
    target: str, sessions: int, plan: RelayPlan, redis_url: str,
    node: node_baseline.NodeBaseline | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One load run against one target: the load client's JSON plus CPU figures."""
    with ExitStack() as stack:
        standin = stack.enter_context(Child("bench.standin"))
        upstream = standin.read_line(20)
        pids = {"standin": standin.pid}
        gateway = target == "gateway" or target.startswith("gateway-w")
        if target == "direct":
            url = upstream
        elif gateway:
            env = gateway_env(redis_url, upstream_url=upstream)
            workers = plan.workers if target != "gateway" else None
            server = stack.enter_context(running_gateway(env, workers=workers))
            assert server.process is not None
            url, pids["relay"] = server.ws, server.process.pid
        else:
            if target == "node":
                assert node is not None and not node.skipped
                command = node.relay_command(upstream)
                other = stack.enter_context(Child("node_relay", command=command))
            else:
                module, args = ("bench.naive_relay", [upstream])
                if target == "picows":
                    module, args = ("bench.picows_relay", [upstream])
                elif target in FLOORS:
                    module, args = ("bench.floor_relays", [upstream, target])
                other = stack.enter_context(Child(module, *args))
            url, pids["relay"] = other.read_line(20), other.pid
            wait_for_port(url)
        redis_connections = _redis_connections(redis_url)
        args = [url, "--sessions", str(sessions), "--warmup", str(plan.warmup)]
        args += ["--window", str(plan.window)] + (["--gateway"] if gateway else [])
        client = stack.enter_context(
            Child("bench.load_client", *args, env={"BENCH_JWT_SECRET": JWT_SECRET})
        )
        client.expect("ready", 120)
        client.expect("start", 30)
        before = {name: _counters(pid) for name, pid in pids.items()}
        client.expect("stop", plan.window + 30)
        after = {name: _counters(pid) for name, pid in pids.items()}
        cpu, waits = {}, {}
        for name in pids:
            (cpu0, wait0), (cpu1, wait1) = before[name], after[name]
            cpu[name] = sum(seconds - cpu0.get(pid, 0.0) for pid, seconds in cpu1.items())
            waits[name] = sum(seconds - wait0.get(pid, 0.0) for pid, seconds in wait1.items())
        result: dict[str, Any] = json.loads(client.read_line(60))
        if "relay" in pids:
            # a process of the relay that ended inside the window took its CPU time with it
            result["relay_processes"] = len(after["relay"][0])
            result["relay_processes_gone"] = len(set(before["relay"][0]) - set(after["relay"][0]))
        if gateway:
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


def _counters(pid: int) -> tuple[dict[int, float], dict[int, float]]:
    """CPU seconds and run-queue wait seconds of every process of `pid`'s tree, by pid."""
    if pid == 0:
        return {}, {}
    cpu = tree_cpu_seconds(pid)
    waits = {}
    for member in cpu:
        with contextlib.suppress(OSError):
            waits[member] = runqueue_wait_seconds(member)
    return cpu, waits


def workers_supported() -> str | None:
    """None when `voicegate serve` takes `--workers`, else why not."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "voicegate", "serve", "--help"],
            capture_output=True, text=True, timeout=30, cwd=tempfile.gettempdir(),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`voicegate serve --help` failed: {exc!r}"
    if "--workers" not in out.stdout:
        return "`voicegate serve` has no --workers option yet"
    return None


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
    if run is None or "error" in run or not run.get("sent"):
        return False
    return _p99(run) < HELD_P99_MS and run["lost"] <= MAX_LOST * run["sent"]


def run(plan: RelayPlan, log: Callable[[str], None]) -> dict[str, Any]:
    """Every target at every session count (smaller loads first), then the extra counts for
    the relays that still hold; the raw runs and, per target and count, the kept one."""
    runs: list[dict[str, Any]] = []
    node = node_baseline.prepare(log)
    skipped: dict[str, str] = {}
    if node.skipped:
        skipped["node"] = node.skipped
    extra_targets: tuple[str, ...] = ()
    if plan.workers:
        extra_targets = (workers_target(plan.workers),)
        why = workers_supported()
        if why:
            log(f"relay: --workers {plan.workers}: {why}; the {extra_targets[0]} runs are skipped")
            skipped[extra_targets[0]] = why
    with running_redis() as redis:

        def level(sessions: int, targets: tuple[str, ...]) -> None:
            for repeat in range(plan.repeats):
                for target in targets:
                    if target in skipped:
                        if repeat == 0:
                            runs.append(
                                {"target": target, "sessions": sessions, "skipped": skipped[target]}
                            )
                        continue
                    log(f"relay: {target} @ {sessions} sessions (run {repeat + 1})")
                    try:
                        result = run_one(target, sessions, plan, redis.url, node)
                    except RuntimeError as exc:
                        log(f"  failed: {str(exc)[:300]}")
                        result = {"target": target, "sessions": sessions, "error": str(exc)}
                    else:
                        rtt = result["rtt_ms"]
                        per_rt = ""
                        if "relay" in result["cpu_s"]:
                            us = cpu_per_round_trip([result], target, sessions) * 1e6
                            per_rt = f"  relay {us:.1f} µs/rt"
                        log(
                            f"  p50 {rtt['p50']:.2f} ms  p99 {rtt['p99']:.2f} ms  "
                            f"lost {result['lost']}  cpu {_fmt_cpu(result['cpu_s'])}{per_rt}"
                        )
                    runs.append(result)

        main_targets = TARGETS[:2] + extra_targets + TARGETS[2:]
        for sessions in plan.sessions:
            level(sessions, main_targets + (FLOORS if plan.floors else ()))
        for sessions in plan.extra:
            best = kept(runs)
            holding = tuple(t for t in RELAYS if held(best, t)[1])  # held every count so far
            if not holding:
                break
            level(sessions, ("direct", *holding))
    node_info = {"skipped": node.skipped} if node.skipped else {"helpers": node.helpers}
    return {"runs": runs, "node": node_info, "skipped": skipped}


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


def _rank(target: str) -> tuple[int, str]:
    """Where a target goes in tables: the gateway's variants after it, the floors last."""
    order = ("direct", "gateway", "naive", *BASELINES, *FLOORS)
    if target.startswith("gateway-w"):
        return order.index("gateway"), target
    return (order.index(target) if target in order else len(order)), target


def summarize(result: dict[str, Any], main_levels: tuple[int, ...]) -> dict[str, Any]:
    runs = result["runs"]
    best = kept(runs)
    out: dict[str, Any] = {"held": {}, "cpu_us_per_round_trip": {}, "kept": {}}
    for target in RELAYS:
        count, open_ended = held(best, target)
        out["held"][target] = {"sessions": count, "lower_bound": open_ended}
    for target in sorted({t for t, _ in best if t != "direct"}, key=_rank):
        out["cpu_us_per_round_trip"][target] = {
            n: cpu_per_round_trip(runs, target, n) * 1e6 for n in _levels(best, target)
        }
    for (target, n), r in sorted(best.items(), key=lambda kv: (kv[0][1], _rank(kv[0][0]))):
        out["kept"][f"{target}@{n}"] = r
    out["main_levels"] = list(main_levels)
    out["skipped"] = result.get("skipped", {})
    out["node"] = result.get("node", {})
    return out


def _us(value: float) -> str:
    return f"{value:.0f} µs" if value == value else "-"


def rows(summary: dict[str, Any]) -> list[Row]:
    kept_runs = summary["kept"]
    skipped: dict[str, str] = summary.get("skipped", {})
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

    def us(target: str, n: int) -> float:
        return float(cpu.get(target, {}).get(n, math.nan))

    def judged(ok: bool, n: int) -> str:
        return verdict(ok if n >= CPU_TARGET_FROM else None)

    for n in summary["main_levels"]:
        g, v, node = us("gateway", n), us("naive", n), us("node", n)
        out.append(
            Row(
                f"relay CPU per round trip @ {n} sessions", _us(g),
                f"naive {_us(v)}", f"{g / v:.2f}", f"≤ {CPU_TARGET:.2f}",
                judged(g / v <= CPU_TARGET if g == g and v == v else False, n),
            )
        )  # fmt: skip
        if "node" in skipped:
            out.append(
                Row(f"  … vs the Node ws relay @ {n}", _us(g), "node skipped",
                    "", f"≤ {CPU_NODE_TARGET:.2f}", "SKIP")
            )  # fmt: skip
        else:
            out.append(
                Row(
                    f"  … vs the Node ws relay @ {n}", _us(g), f"node {_us(node)}",
                    f"{g / node:.2f}", f"≤ {CPU_NODE_TARGET:.2f}",
                    judged(g / node <= CPU_NODE_TARGET if g == g and node == node else False, n),
                )
            )  # fmt: skip
    others = [t for t in cpu if t not in ("gateway", "naive") and not t.startswith("gateway-w")]
    for n in summary["main_levels"]:
        v = us("naive", n)
        shown = [t for t in others if n in cpu[t] or t in skipped]
        if not shown:
            continue
        out.append(
            Row(
                f"  baselines and floors, CPU per round trip @ {n}",
                "; ".join(f"{t} {'skipped' if t in skipped else _us(us(t, n))}" for t in shown),
                f"naive {_us(v)}",
                "; ".join(f"{t} {us(t, n) / v:.2f}" for t in shown if t not in skipped),
                "info", "info",
            )
        )  # fmt: skip
    for target in (t for t in cpu if t.startswith("gateway-w")):
        workers = target.removeprefix("gateway-w")
        for n in summary["main_levels"]:
            w, g = us(target, n), us("gateway", n)
            if target in skipped:
                out.append(
                    Row(f"relay CPU per round trip, {workers} workers @ {n}",
                        f"skipped: {skipped[target]}", f"1 worker {_us(g)}", "",
                        f"≤ {WORKERS_TARGET:.2f}", "SKIP")
                )  # fmt: skip
                continue
            out.append(
                Row(
                    f"relay CPU per round trip, {workers} workers @ {n}", _us(w),
                    f"1 worker {_us(g)}", f"{w / g:.2f}", f"≤ {WORKERS_TARGET:.2f}",
                    judged(w / g <= WORKERS_TARGET if w == w and g == g else False, n),
                )
            )  # fmt: skip
    return out


def relative_table(summary: dict[str, Any]) -> str:
    """CPU per round trip of every relay relative to the naive relay's, one line per count:
    the issue's `voicegate | FastAPI floor | sansio floor | Node ws | picows` table."""
    cpu = summary["cpu_us_per_round_trip"]
    skipped: dict[str, str] = summary.get("skipped", {})
    relays = [t for t in cpu if t != "naive"]
    header = ("sessions", "naive µs/rt", *(("voicegate" if t == "gateway" else t) for t in relays))
    lines = [header]
    for n in sorted(cpu.get("naive", {})):
        v = cpu["naive"][n]
        cells = []
        for t in relays:
            us = cpu[t].get(n, math.nan)
            cells.append("skipped" if t in skipped else ("-" if us != us else f"{us / v:.2f}"))
        lines.append((str(n), f"{v:.0f}", *cells))
    return _aligned(lines)


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
        if "error" in r or "skipped" in r:
            word = "error" if "error" in r else "skipped"
            lines.append((n, target, word, *[""] * (len(header) - 3)))
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
    return _aligned(lines)


def _aligned(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [" | ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)
