"""`python -m bench`: run the benchmarks, print the table, save the raw results.

    python -m bench            # the full run (about 7-8 minutes)
    python -m bench --quick    # fewer samples and session counts (about 1 minute)
    python -m bench --only relay --sessions 10,50
    python -m bench --only relay --sessions 50,100 --workers 2
    python -m bench --only soak  # or `python -m bench soak [--sessions N --minutes M ...]`

Every figure is a ratio against a baseline measured in the same run (docs: benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import memory, redis_ops, relay, session_setup, soak
from bench._loop import run as run_async
from bench._procs import running_redis
from bench._stats import Row, table

RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = ("redis", "setup", "relay", "memory")
# The soak runs for ten minutes and prints figures of its own: only when asked for.
SOAK = "soak"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and session counts")
    parser.add_argument("--only", action="append", choices=(*FIGURES, SOAK), help="run only these")
    parser.add_argument("--sessions", help="relay session counts, e.g. 10,50,100")
    parser.add_argument("--repeats", type=int, help="relay runs per target and count")
    parser.add_argument("--window", type=float, help="relay measured window, seconds")
    parser.add_argument(
        "--floors", action="store_true",
        help="also run the stripped-down relays that show what the stack costs by itself",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, metavar="N",
        help="also run the gateway as `voicegate serve --workers N` (CPU of all its processes)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers: at least 1")
    return args


def plan_for(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    sessions = (10, 50) if quick else (10, 50, 100)
    if args.sessions:
        sessions = tuple(int(n) for n in args.sessions.split(","))
    return {
        "redis_rounds": 8 if quick else 20,
        "redis_block": 100,
        "setup_samples": 100 if quick else 300,
        "memory_sessions": 100 if quick else 300,
        "relay": relay.RelayPlan(
            sessions=sessions,
            extra=() if quick or args.sessions else (150, 200, 250),
            repeats=args.repeats or (1 if quick else 3),
            warmup=1.5,
            window=args.window or (4.0 if quick else 5.0),
            floors=args.floors,
            workers=args.workers,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SOAK]:
        return soak.main(argv[1:])
    args = parse_args(argv)
    if args.only and SOAK in args.only:
        if len(args.only) > 1:
            log("soak: run on its own (it prints figures of its own); the others are skipped")
        return soak.main([])
    plan = plan_for(args)
    chosen = args.only or list(FIGURES)
    started = time.monotonic()
    rows: list[Row] = []
    raw: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "load": _load()},
        "plan": {k: (vars(v) if isinstance(v, relay.RelayPlan) else v) for k, v in plan.items()},
    }
    details = relative = ""
    if "redis" in chosen:
        log("redis: admission and rate-limit decision vs their baselines")
        with running_redis() as server:
            result = run_async(
                redis_ops.measure(server.url, plan["redis_rounds"], plan["redis_block"])
            )
        raw["redis_seconds"] = result
        rows += redis_ops.rows(result)
    if "setup" in chosen:
        log("setup: session set-up with Redis vs memory mode")
        setup = session_setup.run(plan["setup_samples"])
        raw["setup_ms"] = setup
        rows += session_setup.rows(setup)
    if "relay" in chosen:
        relay_plan = plan["relay"]
        result = relay.run(relay_plan, log)
        summary = relay.summarize(result, relay_plan.sessions)
        raw["relay"] = {"runs": result["runs"], **summary}
        rows += relay.rows(summary)
        details = relay.detail_table(summary)
        relative = relay.relative_table(summary)
    if "memory" in chosen:
        log("memory: RSS per idle session")
        mem = memory.run(plan["memory_sessions"])
        raw["memory"] = mem
        rows += memory.rows(mem)
    raw["rows"] = [r.as_dict() for r in rows]
    raw["elapsed_s"] = round(time.monotonic() - started, 1)

    print()
    print(table(rows))
    if details:
        print("\nrelay runs (latency: the least disturbed run of each; CPU: all runs)")
        print(details)
        print("\nrelay CPU per round trip relative to the naive relay's (all runs)")
        print(relative)
    path = save(raw)
    print(f"\n{raw['elapsed_s']:.0f} s; raw results in {path.relative_to(Path.cwd())}")
    return 0


def save(raw: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{stamp}{'-quick' if raw['quick'] else ''}.json"
    text = json.dumps(raw, indent=1, default=str)
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


if __name__ == "__main__":
    sys.exit(main())
