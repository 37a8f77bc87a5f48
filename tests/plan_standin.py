"""A real HTTP server standing in for the operator's plan service (PLAN_LOOKUP_URL)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import uvicorn

from tests.redis_server import free_port
from tests.servers import QuietServer

Mode = Literal["answer", "hang", "fail"]


@dataclass
class PlanStandin:
    """Answers `{"plan": plans[user_id]}` (404 for users it does not know) at `url`.

    `mode`: "answer", "hang" (never answers) or "fail" (HTTP 500). Every request is recorded.
    With a `gate`, answers wait until it is set (to hold an admission mid-way).
    """

    plans: dict[str, str | None]
    token: str = "plan-service-token-0123456789"
    mode: Mode = "answer"
    gate: asyncio.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _task: asyncio.Task[None] | None = None
    _server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/internal/plan"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        query = dict(parse_qsl(scope["query_string"].decode()))
        self.requests.append({"path": scope["path"], "query": query, "headers": headers})
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "fail":
            status, body = 500, {"error": "database down"}
        elif headers.get("authorization") != f"Bearer {self.token}":
            status, body = 401, {"error": "who are you"}
        elif query.get("user_id") not in self.plans:
            status, body = 404, {"error": "no such user"}
        else:
            status, body = 200, {"plan": self.plans[query["user_id"]]}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    async def __aenter__(self) -> PlanStandin:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, lifespan="off",
                                log_config=None, timeout_graceful_shutdown=0)  # fmt: skip
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(10):
            while not self._server.started:
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        self._server.force_exit = True
        async with asyncio.timeout(10):
            await self._task
