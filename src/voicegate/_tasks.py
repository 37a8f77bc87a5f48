"""Stopping a background task so that a shutdown cannot hang on it.

One `cancel()` is not enough on Python 3.11: `asyncio.wait_for` returns the result instead of
raising when the awaited operation completes in the same loop turn as the cancellation
(CPython gh-86296, fixed by 3.12's rewrite). redis-py wraps every command's send in `wait_for`
when a socket timeout is set, so a task cancelled while a command completes carries on as if
nothing happened (`task.cancelling()` stays 1) and a single `gather` after the cancel waits
for ever. Cancelling again while the task runs delivers the request it lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["stop_task"]

log = logging.getLogger("voicegate")

# How long one cancellation is given to end the task before it is sent again: a task that got
# it ends within a few loop turns, one that lost it is back at an await long before this.
_RESEND_SECONDS = 0.05


async def stop_task(task: asyncio.Task[Any] | None, *, within: float = 5.0) -> bool:
    """Cancel `task` until it ends, for at most `within` seconds; True when it ended.

    A task still running then is logged by name and left behind: the shutdown goes on.
    """
    if task is None or task.done():
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("Background task %s did not stop within %gs", task.get_name(), within)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(_RESEND_SECONDS, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.warning("Background task %s ended with %r", task.get_name(), task.exception())
    return True
