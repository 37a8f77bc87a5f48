"""A voice connection's state, the transitions it may take, and every way it can end.

Modelled on Starlette's `WebSocketState`: the state is one enum, and `check_move` refuses any
transition the table does not allow.

    ADMITTING ──► OPEN ◄──► RECONNECTING        (the engine went away and is being restored)
        │          │             │
        └──────────┴─────────────┴──► CLOSING ──► CLOSED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ConnectionState", "EndReason", "Ending", "RelayCounts", "check_move"]


class ConnectionState(enum.Enum):
    ADMITTING = "admitting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED = {
    ConnectionState.ADMITTING: {
        ConnectionState.OPEN,
        ConnectionState.CLOSING,
        ConnectionState.CLOSED,
    },
    ConnectionState.OPEN: {ConnectionState.RECONNECTING, ConnectionState.CLOSING},
    ConnectionState.RECONNECTING: {ConnectionState.OPEN, ConnectionState.CLOSING},
    ConnectionState.CLOSING: {ConnectionState.CLOSED},
    ConnectionState.CLOSED: set(),
}


def check_move(current: ConnectionState, new: ConnectionState) -> ConnectionState:
    """`new`, if a connection in state `current` may go there; else RuntimeError."""
    if new not in _ALLOWED[current]:
        raise RuntimeError(f"connection cannot go from {current.value} to {new.value}")
    return new


@dataclass(frozen=True, slots=True)
class Ending:
    """What the client is told when a connection ends, and what becomes of its session."""

    code: int | None  # None: the client is gone, nothing to send
    reason: str
    resumable: bool  # the session stays attached to its user (resume without session_id)
    notice: str | None = None  # the type of a gateway event sent just before the close frame


class EndReason(enum.Enum):
    """Every way a connection ends, with its close code and whether the session stays
    resumable without `session_id` (contract §4: drain, transport drop, upstream failure)."""

    CLIENT_CLOSED = Ending(None, "client closed", resumable=False)
    CLIENT_DROPPED = Ending(None, "connection lost", resumable=True)
    TAKEN_OVER = Ending(4409, "Session resumed by a newer connection", resumable=False)
    DRAINING = Ending(
        1001,
        "Server restarting, reconnect with your session_id",
        resumable=True,
        notice="gateway.draining",
    )
    TIME_UP = Ending(4008, "Session time limit reached", resumable=False)
    ENGINE_LOST = Ending(1011, "Voice engine connection lost", resumable=True)
    TOO_LARGE = Ending(1009, "Message too large", resumable=False)
    SLOW_CLIENT = Ending(1008, "Client is not reading: send buffer full", resumable=False)
    INTERNAL_ERROR = Ending(1011, "Internal error", resumable=True)


@dataclass(slots=True)
class RelayCounts:
    """What was relayed since the last flush to the metrics."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
