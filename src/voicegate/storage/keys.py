"""Redis key names. Every key of one user shares a Redis Cluster hash slot through its `{tag}`,
so that admission, claims and renewals are single atomic scripts on Cluster too:

    vg:{<tag>}:session:<session id>   the session record (JSON), EX = the session TTL
    vg:{<tag>}:admissions             zset of admissions (member: session id, or random for a
                                      bare rate-limit hit) scored by time (ms): the window
    vg:{<tag>}:leases                 zset session id -> lease expiry (ms)
    vg:{<tag>}:owners                 hash session id -> connection id owning the lease
    vg:{<tag>}:resumable              zset session id -> last-alive (ms): sessions a connection
                                      without session_id may resume
    vg:{<tag>}:plan                   the user's plan, cached (EX = the plan cache TTL)
    vg:secret:<hex digest>            an ephemeral client secret's grant (not per user: it is
                                      looked up before the user is known)
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["Keys", "ValueKind", "user_tag", "value_key"]

ValueKind = Literal["plan", "client_secret"]

_PLAIN_ID = re.compile(r"[A-Za-z0-9_.@:-]+")
_DIGEST = re.compile(r"[0-9a-f]{16,128}")


def user_tag(user_id: str) -> str:
    """The hash tag of a user's keys: one tag per user id, and never a brace in it.

    Ids made only of `[A-Za-z0-9_.@:-]` are their own tag, so keys stay readable in
    `redis-cli`; anything else (braces, other characters, the empty id) becomes `~` and the hex
    of its UTF-8 bytes. `~` is never in a plain tag and the encoding is reversible, so two ids
    never share a tag: one user can never read or count against another's keys.
    """
    if _PLAIN_ID.fullmatch(user_id):
        return user_id
    # surrogatepass: a lone surrogate (valid in a Python str, e.g. from a JSON `\\ud800`) still
    # encodes, and decoding gives the same str back: the encoding stays injective.
    return "~" + user_id.encode("utf-8", "surrogatepass").hex()


class Keys:
    """Key names of one user."""

    __slots__ = ("admissions", "leases", "owners", "plan", "prefix", "resumable")

    def __init__(self, user_id: str) -> None:
        self.prefix = f"vg:{{{user_tag(user_id)}}}:"
        self.admissions = self.prefix + "admissions"
        self.leases = self.prefix + "leases"
        self.owners = self.prefix + "owners"
        self.resumable = self.prefix + "resumable"
        self.plan = self.prefix + "plan"

    @property
    def sessions(self) -> str:
        """The prefix of the user's session record keys (a script appends the session id)."""
        return self.prefix + "session:"

    def session(self, session_id: str) -> str:
        return self.sessions + session_id


def value_key(kind: ValueKind, key: str) -> str:
    """The key of a small value: a user's plan, or a client secret's grant by its digest.

    A client secret is looked up by a hex digest of it; anything else is refused, so that the
    secret itself can never become a key name (key names show in `MONITOR` and `SCAN`).
    """
    if kind == "plan":
        return Keys(key).plan
    if not _DIGEST.fullmatch(key):
        raise ValueError("a client_secret key is the secret's hex digest, never the secret")
    return f"vg:secret:{key}"
