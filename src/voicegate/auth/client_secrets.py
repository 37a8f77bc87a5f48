"""Ephemeral client secrets (`POST /v1/realtime/client_secrets`), OpenAI's flow for browsers.

A browser should not hold a long-lived token in a URL or a subprotocol header that proxies log:
the app's backend (or the page, with the user's token) mints a short-lived `ek_…` secret that
stands for the same user and plan until it expires. Only a digest of the secret is stored, in
the state store with the secret's lifetime, so every instance accepts it and a copy of the
store holds nothing usable.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import TYPE_CHECKING

from voicegate.auth.tokens import Identity
from voicegate.errors import AuthError

if TYPE_CHECKING:
    from voicegate.storage import StateBackend

__all__ = ["PREFIX", "ClientSecrets"]

PREFIX = "ek_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class ClientSecrets:
    """Mints and checks ephemeral client secrets."""

    def __init__(self, storage: StateBackend) -> None:
        self._storage = storage

    async def mint(self, identity: Identity, seconds: int) -> tuple[str, int]:
        """A new secret for `identity`, valid for `seconds`; returns it and its expiry (unix s)."""
        value = PREFIX + secrets.token_urlsafe(32)
        expires_at = int(time.time()) + seconds
        record = {
            "user_id": identity.user_id,
            "plan": identity.plan,
            "email": identity.email,
            "expires_at": expires_at,
        }
        await self._storage.set_value("client_secret", _digest(value), json.dumps(record), seconds)
        return value, expires_at

    async def identify(self, value: str) -> Identity:
        """Who `value` stands for; `AuthError` when it is unknown or expired."""
        raw = await self._storage.get_value("client_secret", _digest(value))
        record = json.loads(raw) if raw else None
        if not isinstance(record, dict) or record.get("expires_at", 0) <= time.time():
            raise AuthError("Invalid or expired client secret")
        return Identity(record["user_id"], record["plan"], record.get("email"))
