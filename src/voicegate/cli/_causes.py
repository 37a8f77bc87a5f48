"""The exceptions behind a failed connection, as client libraries wrap them.

httpx and websockets chain the socket error as `__cause__`/`__context__`, often twice; urllib3
keeps it in `.reason` (MaxRetryError → NewConnectionError → the socket error). Each command words
the causes for its own reader; the walk is the same.
"""

from __future__ import annotations

from collections.abc import Iterator

_DEPTH = 10  # a wrapped error is a few levels deep; a cycle must not loop for ever


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it wraps, outermost first."""
    seen: BaseException | None = error
    for _ in range(_DEPTH):
        if seen is None:
            return
        yield seen
        reason = getattr(seen, "reason", None)
        seen = reason if isinstance(reason, BaseException) else seen.__cause__ or seen.__context__
