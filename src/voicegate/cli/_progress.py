"""A live status line for the checks that take minutes (`verify --long`, `--monitoring`)."""

from __future__ import annotations

import time
from typing import TextIO

_REWRITE = "\r\x1b[K"  # back to the line's start, erase it


def clock(seconds: float) -> str:
    """`m:ss`, as a stopwatch shows it."""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


class Progress:
    """On a terminal, one line rewritten in place at every update; elsewhere (a log file, CI),
    a plain line at most every `every` seconds, so that a log shows the run go by without a
    line per update."""

    def __init__(self, out: TextIO, every: float) -> None:
        self.out, self.every = out, every
        self.tty = out.isatty()
        self._shown = False
        self._last: float | None = None

    def update(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            self.out.write(f"{_REWRITE}{text}")
            self._shown = True
        elif self._last is None or now - self._last >= self.every:
            self.out.write(f"{text}\n")
            self._last = now
        else:
            return
        self.out.flush()

    def clear(self) -> None:
        """Erase the live line, so that the check's ✅/❌ line takes its place."""
        if self._shown:
            self.out.write(_REWRITE)
            self.out.flush()
            self._shown = False
