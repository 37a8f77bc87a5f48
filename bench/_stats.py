"""Percentiles, result rows and the table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of already sorted values, nearest rank; NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Iterable[float]) -> dict[str, float]:
    """Count, mean, p50, p90, p99, p99.9 and max of `values`."""
    ordered = sorted(values)
    n = len(ordered)
    return {
        "n": n,
        "mean": sum(ordered) / n if n else math.nan,
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "p999": percentile(ordered, 0.999),
        "max": ordered[-1] if n else math.nan,
    }


@dataclass
class Row:
    """One line of the table: a figure, its baseline from the same run, and the verdict."""

    figure: str
    measured: str
    baseline: str
    ratio: str
    target: str
    verdict: str  # "PASS", "FAIL" or "info"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(ok: bool | None) -> str:
    return "info" if ok is None else ("PASS" if ok else "FAIL")


def table(rows: Sequence[Row]) -> str:
    """A plain-text table of `rows`, one line each, columns aligned."""
    header = ("figure", "measured", "baseline", "ratio", "target", "verdict")
    cells = [header] + [
        (r.figure, r.measured, r.baseline, r.ratio, r.target, r.verdict) for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def fmt_ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"
