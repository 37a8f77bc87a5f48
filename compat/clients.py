"""The clients of the suite: how each is configured, by which driver, against which server.

Each is configured only as its own documentation configures it for OpenAI, with the gateway's
base URL in place of OpenAI's and a voicegate credential in place of the API key: the user's
JWT, or (in browsers, as OpenAI asks) an ephemeral secret from `POST /v1/realtime/client_secrets`.
The README's "Client libraries" section shows the same configuration, one line per client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from compat.gateway import Gateway

__all__ = ["CLIENTS", "VOICE", "Client"]

VOICE = "coral"  # neither voicegate's default voice nor any client's: seen only if applied

Runtime = Literal["python", "node", "browser"]


@dataclass(frozen=True)
class Client:
    name: str
    runtime: Runtime
    driver: str  # under compat/drivers/
    tls: bool  # against the TLS server (wss:), else the plain one
    ephemeral: bool  # an `ek_…` client secret as the key, else the user's JWT
    url: Callable[[Gateway], str]  # the base URL or endpoint, as this client is given it
    options: tuple[str, ...] = ()

    def arguments(self, gateway: Gateway, key: str, page_server: str) -> list[str]:
        """The driver's arguments (for a browser page: the page's URL)."""
        if self.runtime == "browser":
            query = urlencode({"url": self.url(gateway), "key": key, "voice": VOICE})
            return [f"{page_server}/{self.driver}?{query}"]
        return [self.url(gateway), key, VOICE, *self.options]


def _endpoint(gateway: Gateway) -> str:
    return f"{gateway.ws}/v1/realtime?model=gpt-realtime"


CLIENTS: tuple[Client, ...] = (
    # AsyncOpenAI(base_url="http://HOST/v1", api_key=JWT).realtime.connect(model=…)
    Client("openai-python", "python", "openai_python.py", tls=False, ephemeral=False,
           url=lambda g: f"{g.http}/v1"),
    # new OpenAI({baseURL: "https://HOST/v1", apiKey: JWT}) + OpenAIRealtimeWS: always wss:
    Client("openai-node (wss)", "node", "node/openai_node.mjs", tls=True, ephemeral=False,
           url=lambda g: f"{g.http}/v1"),
    # RealtimeRunner(agent).run(model_config={"url": "ws://HOST/v1/realtime?model=…",
    #                                         "api_key": JWT})
    Client("openai-agents (python)", "python", "agents_python.py", tls=False, ephemeral=False,
           url=_endpoint),
    # session.connect({url: "ws://HOST/v1/realtime?model=…", apiKey: ek_…}) in Chromium
    Client("@openai/agents-realtime (browser)", "browser", "agents.html", tls=False,
           ephemeral=True, url=_endpoint),
    # OpenAIRealtimeLLMService(base_url="ws://HOST/v1/realtime", api_key=JWT)
    Client("pipecat", "python", "pipecat_realtime.py", tls=False, ephemeral=False,
           url=lambda g: f"{g.ws}/v1/realtime"),
    # openai.realtime.RealtimeModel(base_url="http://HOST/v1", api_key=JWT)
    Client("livekit (server VAD)", "python", "livekit_realtime.py", tls=False, ephemeral=False,
           url=lambda g: f"{g.http}/v1"),
    Client("livekit (push-to-talk)", "python", "livekit_realtime.py", tls=False,
           ephemeral=False, url=lambda g: f"{g.http}/v1", options=("--push-to-talk",)),
    # new WebSocket("ws://HOST/v1/realtime?model=…",
    #               ["realtime", "openai-insecure-api-key." + ek_…])
    Client("raw browser WebSocket", "browser", "raw.html", tls=False, ephemeral=True,
           url=_endpoint),
)  # fmt: skip
