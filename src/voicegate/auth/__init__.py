"""Who a client is: its credential (a JWT or an ephemeral client secret) and its plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicegate._retry import Backoff
from voicegate.auth.client_secrets import PREFIX as CLIENT_SECRET_PREFIX
from voicegate.auth.client_secrets import ClientSecrets
from voicegate.auth.plans import PlanLookup
from voicegate.auth.tokens import Identity, TokenVerifier, VerifiedToken, mint_token
from voicegate.errors import AuthError

if TYPE_CHECKING:
    from voicegate.config import Settings
    from voicegate.storage import StateBackend

__all__ = [
    "CLIENT_SECRET_PREFIX",
    "Authenticator",
    "ClientSecrets",
    "Identity",
    "PlanLookup",
    "TokenVerifier",
    "VerifiedToken",
    "mint_token",
]


class Authenticator:
    """Turns a credential into an `Identity` with its plan, whatever kind of credential."""

    def __init__(self, settings: Settings, storage: StateBackend) -> None:
        self.tokens = TokenVerifier(settings)
        self.client_secrets = ClientSecrets(storage)
        self.plans: PlanLookup | None = None
        if settings.plan_lookup_url is not None:
            token = settings.plan_lookup_token
            self.plans = PlanLookup(
                settings.plan_lookup_url,
                token.get_secret_value() if token is not None else None,
                storage,
                cache_seconds=settings.plan_cache_seconds,
                timeout=settings.plan_lookup_timeout_seconds,
                backoff=Backoff.from_settings(settings),
            )

    async def identify(self, credential: str | None) -> Identity:
        """The identity behind `credential`. Raises `AuthError` (4001) or `PlanUnavailable`."""
        if not credential:
            raise AuthError("Missing token")
        if credential.startswith(CLIENT_SECRET_PREFIX):
            return await self.client_secrets.identify(credential)
        token = self.tokens.verify(credential)
        return await self.identity_of(token)

    async def identity_of(self, token: VerifiedToken) -> Identity:
        """`token`'s identity, its plan looked up when the token carries none ('' if unknown)."""
        plan = token.plan
        if plan is None and self.plans is not None:
            plan = await self.plans.plan_for(token.user_id, token.email)
        return Identity(token.user_id, plan or "", token.email)

    async def aclose(self) -> None:
        if self.plans is not None:
            await self.plans.aclose()
