"""`voicegate sentry-test`: one test event through `SENTRY_DSN`, the way the server sends events.

The event is made by sentry-sdk with the server's own options (`sentry_options`: the same
environment, release and scrubber) and sent by sentry-sdk's own HTTP transport, so proxies, TLS
and compression are the server's. That transport tells nobody what Sentry answered; here every
request it makes is recorded, and the command waits for the answer to the event's request:

    delivered                 2xx: prints the event id to look up in Sentry
    refused                   401/403 (key or project), 413, 429 (quota, with Retry-After), 5xx
    unreachable               connection refused, DNS, TLS, ... (the cause, in words)
    no answer                 nothing within --timeout

The output never shows the DSN's key: Sentry is named by its host and project id, and every line
is masked with the DSN and its keys as known secrets. Exit code 0 when Sentry accepted the event,
1 when not (no DSN included), 2 for a malformed DSN (a configuration error, as `serve` says it).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import sentry_sdk
from sentry_sdk.transport import HttpTransport
from sentry_sdk.utils import Dsn

from voicegate._redact import mask_text
from voicegate.cli._causes import causes
from voicegate.config import Settings
from voicegate.ops.sentry import sentry_environment, sentry_options

__all__ = ["DeliveryTransport", "run"]

OK, FAIL = "✅", "❌"
MESSAGE = "voicegate sentry-test: a test event sent by `voicegate sentry-test`; nothing is wrong"


@dataclass
class Delivery:
    """The fate of the first request the transport made (written by its worker thread)."""

    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    error: BaseException | None = None
    dropped: str | None = None
    seconds: float = 0.0

    def answered(
        self, status: int, body: bytes, headers: Mapping[str, str], seconds: float
    ) -> None:
        if not self.done.is_set():
            self.status, self.body, self.headers, self.seconds = status, body, headers, seconds
            self.done.set()

    def failed(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    def lost(self, reason: str) -> None:
        if not self.done.is_set():
            self.dropped = reason
            self.done.set()


class _RecordingPool:
    """A urllib3 pool that records each request's answer or exception, then behaves as before."""

    def __init__(self, pool: Any, delivery: Delivery) -> None:
        self._pool, self._delivery = pool, delivery

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            response = self._pool.request(method, url, *args, **kwargs)
        except Exception as exc:
            self._delivery.failed(exc)
            raise
        seconds = time.perf_counter() - started
        self._delivery.answered(response.status, response.data or b"", response.headers, seconds)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class DeliveryTransport(HttpTransport):
    """sentry-sdk's HTTP transport, unchanged, with the answer to its first request recorded."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.delivery = Delivery()
        # Every release from 2.11 on sends each request through `self._pool.request`; its
        # answer is otherwise only logged (and only with debug=True).
        self._pool = _RecordingPool(self._pool, self.delivery)  # type: ignore[assignment]

    def on_dropped_event(self, reason: str) -> None:
        """Also called when the SDK drops the event without a request (its own rate limit,
        a full queue)."""
        self.delivery.lost(reason)


def _cause(error: BaseException) -> str:
    """Why a request could not be made, in an operator's words."""
    for seen in causes(error):
        name = type(seen).__name__
        if isinstance(seen, socket.gaierror) or name == "NameResolutionError":
            return "DNS lookup failed (is the DSN's host right, and DNS reachable from here?)"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused (nothing listens on that host and port)"
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({seen.reason or seen})"
        if isinstance(seen, TimeoutError) or "Timeout" in name:
            return "connection timed out (a firewall dropping packets?)"
    return str(error) or type(error).__name__


def _detail(body: bytes) -> str:
    """Sentry's own explanation of a refusal (`{"detail": …}`), shortened, or nothing."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        text = str(parsed.get("detail") or "")
    return f" ({text[:160]})" if text else ""


def _verdict(delivery: Delivery, event_id: str, where: str) -> tuple[bool, str]:
    """✅ or ❌, and the line's text, for a finished delivery."""
    if delivery.error is not None:
        return False, f"cannot reach {where}: {_cause(delivery.error)}"
    if delivery.status is None:
        return False, f"sentry-sdk dropped the event without sending it ({delivery.dropped})"
    status, detail = delivery.status, _detail(delivery.body)
    if 200 <= status < 300:
        ms = delivery.seconds * 1000
        return True, (
            f"delivered, HTTP {status} in {ms:.0f} ms; event id {event_id}: search "
            "for it in the project's issues"
        )
    if status == 429:
        after = delivery.headers.get("Retry-After")
        wait = f", retry after {after} s" if after else ""
        return False, (
            f"rate limited, HTTP 429{wait}{detail}: the project or organisation is "
            "over its quota or rate limit, the event was not kept"
        )
    if status in (401, 403):
        return False, (
            f"rejected with HTTP {status}{detail}: Sentry does not accept this DSN's "
            "key for this project (disabled or deleted key, wrong project); copy the "
            "DSN again from the project's Client Keys page"
        )
    if status == 413:
        return False, f"rejected with HTTP 413{detail}: the event is over Sentry's size limit"
    if status >= 500:
        return False, (
            f"answered HTTP {status}{detail}: an error on Sentry's side, or a "
            "proxy's in between; try again later"
        )
    if 300 <= status < 400:
        return False, (
            f"answered HTTP {status}, a redirect that sentry-sdk does not follow: is "
            "the DSN's host the ingest host?"
        )
    return False, f"rejected with HTTP {status}{detail}"


def run(settings: Settings, timeout: float, out: TextIO) -> int:
    """Send the test event and report; 0 when Sentry accepted it, else 1."""
    if settings.sentry_dsn is None:
        print(
            f"{FAIL} Sentry: SENTRY_DSN is not set, so the server reports no errors: set it "
            "where the server reads its configuration (environment or .env) and run this "
            "again there",
            file=out,
        )
        return 1
    value = settings.sentry_dsn.get_secret_value()
    dsn = Dsn(value)  # validated with the settings
    secrets = tuple(s for s in (value, dsn.public_key, dsn.secret_key) if s)
    where = f"{dsn.scheme}://{dsn.netloc}"
    environment, release = sentry_environment(settings), settings.app_version

    def say(line: str) -> None:
        print(mask_text(line, secrets), file=out, flush=True)

    say(
        f"Sentry test event for project {dsn.project_id} at {where} (environment {environment}, "
        f"release {release})"
    )
    options = sentry_options(settings)
    # The transport is the server's, recorded; the rest only keeps this short-lived client
    # quiet: no client reports of its own, no wait at exit (the wait is below, bounded).
    options.update(transport=DeliveryTransport, send_client_reports=False, shutdown_timeout=0)
    sentry_sdk.init(**options)
    client = sentry_sdk.get_client()
    try:
        transport = client.transport
        assert isinstance(transport, DeliveryTransport)
        event_id = sentry_sdk.capture_message(
            MESSAGE, level="info", tags={"voicegate.check": "sentry-test"}
        )
        if event_id is None:
            say(f"{FAIL} Sentry: the event was dropped before sending (before_send)")
            return 1
        if not transport.delivery.done.wait(timeout):
            say(
                f"{FAIL} Sentry: no answer from {where} within {timeout:g} s (a firewall that "
                f"drops packets, or a proxy that holds the request?); event id {event_id} was "
                "not confirmed"
            )
            return 1
        delivered, text = _verdict(transport.delivery, event_id, where)
    finally:
        client.close(timeout=0)
    say(f"{OK if delivered else FAIL} Sentry: {text}")
    return 0 if delivered else 1
