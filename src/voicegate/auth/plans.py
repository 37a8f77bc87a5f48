"""Plans of users whose tokens carry none, from the operator's own service (PLAN_LOOKUP_URL).

Identity providers (Supabase, Auth0, …) issue tokens without the user's plan; the original
backend looked it up in its own database. `GET <url>?user_id=…&email=…` with
`Authorization: Bearer <PLAN_LOOKUP_TOKEN>` answers `{"plan": "…"}` (404 or `null`: no plan).
Answers are cached in the state store for PLAN_CACHE_SECONDS, so one lookup serves every
instance; concurrent admissions of one user share one request; every request is bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import httpx

from voicegate._retry import Backoff, retry
from voicegate.errors import PlanUnavailable

if TYPE_CHECKING:
    from voicegate.storage import StateBackend

__all__ = ["PlanLookup"]

log = logging.getLogger("voicegate.auth")

_NO_PLAN = ""  # cached answer for a user the service says has no plan


class _Retry(Exception):
    """A lookup failure worth another attempt (no answer, 5xx, 429)."""


class PlanLookup:
    """Looks plans up over HTTP, through a cache in the state store."""

    def __init__(
        self,
        url: str,
        token: str | None,
        storage: StateBackend,
        *,
        cache_seconds: int,
        timeout: float,
        backoff: Backoff,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)
        self._url = url
        self._storage = storage
        self._cache_seconds = cache_seconds
        self._backoff = backoff
        self._in_flight: dict[str, asyncio.Future[str | None]] = {}

    async def plan_for(self, user_id: str, email: str | None) -> str | None:
        """The user's plan, None when the service says there is none; `PlanUnavailable` when
        the service cannot answer (after the retries)."""
        cached = await self._storage.get_value("plan", user_id)
        if cached is not None:
            return cached or None
        pending = self._in_flight.get(user_id)
        if pending is not None:  # another admission of this user is asking already
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._in_flight[user_id] = future
        try:
            plan = await self._ask(user_id, email)
            await self._storage.set_value("plan", user_id, plan or _NO_PLAN, self._cache_seconds)
        except BaseException as exc:
            future.set_exception(
                exc if isinstance(exc, PlanUnavailable) else PlanUnavailable(str(exc))
            )
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(plan)
            return plan
        finally:
            del self._in_flight[user_id]

    async def _ask(self, user_id: str, email: str | None) -> str | None:
        params = {"user_id": user_id, **({"email": email} if email else {})}
        try:
            response = await retry(lambda: self._get(params), self._backoff, retry_on=(_Retry,))
        except _Retry as exc:
            raise PlanUnavailable(f"PLAN_LOOKUP_URL did not answer: {exc}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PlanUnavailable(f"PLAN_LOOKUP_URL answered HTTP {response.status_code}")
        try:
            plan = json.loads(response.content).get("plan")
        except (ValueError, AttributeError):
            raise PlanUnavailable("PLAN_LOOKUP_URL answered something other than JSON") from None
        if plan is not None and not isinstance(plan, str):
            raise PlanUnavailable("PLAN_LOOKUP_URL answered a `plan` that is not a string")
        return plan

    async def _get(self, params: dict[str, str]) -> httpx.Response:
        try:
            response = await self._client.get(self._url, params=params)
        except httpx.HTTPError as exc:  # connect errors and timeouts: the service may come back
            raise _Retry(type(exc).__name__) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}")
        return response

    async def aclose(self) -> None:
        await self._client.aclose()
