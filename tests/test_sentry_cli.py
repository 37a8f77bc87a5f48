"""`voicegate sentry-test` against a real HTTP stand-in for Sentry, answering as Sentry does."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.redis_server import free_port
from tests.sentry_standin import SentryStandin, event_message
from tests.servers import TEST_JWT_SECRET, clean_environment
from voicegate.config import package_version

PUBLIC_KEY = "5f0e1d2c3b4a59687766554433221100"
SECRET_KEY = "00112233445566778899aabbccddeeff"


def sentry_test(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m voicegate sentry-test` in the server's environment (`env`), as an operator
    runs it; nothing of this machine's own configuration comes along."""
    return subprocess.run(
        [sys.executable, "-m", "voicegate", "sentry-test", *argv],
        env=clean_environment(REDIS_ENABLED="false", JWT_SECRET=TEST_JWT_SECRET, **env),
        capture_output=True, text=True, timeout=60, check=False, cwd=tempfile.gettempdir(),
    )  # fmt: skip


def dsn_of(standin: SentryStandin) -> str:
    """The stand-in's DSN with a real-looking key, and the legacy secret part too."""
    return standin.dsn.replace("publickey", f"{PUBLIC_KEY}:{SECRET_KEY}")


def assert_no_key(done: subprocess.CompletedProcess[str]) -> None:
    shown = done.stdout + done.stderr
    assert PUBLIC_KEY not in shown and SECRET_KEY not in shown, shown
    assert PUBLIC_KEY[:8] not in shown  # not even its start
    assert "Traceback" not in shown


@pytest.fixture
def sentry() -> Iterator[SentryStandin]:
    with SentryStandin(project="42") as standin:
        yield standin


def test_the_event_arrives_with_the_servers_environment_and_release(
    sentry: SentryStandin,
) -> None:
    done = sentry_test(
        {"SENTRY_DSN": dsn_of(sentry), "SENTRY_ENVIRONMENT": "qa", "APP_VERSION": "9.8.7-test"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    header, verdict = done.stdout.splitlines()
    port = sentry.dsn.rsplit(":", 1)[1].split("/")[0]
    assert header == (
        f"Sentry test event for project 42 at http://127.0.0.1:{port} "
        "(environment qa, release 9.8.7-test)"
    )
    event = sentry.wait_for(lambda e: "sentry-test" in event_message(e), timeout=5)
    assert verdict.startswith("✅ Sentry: delivered, HTTP 200 in ")
    assert verdict.endswith(f"event id {event['event_id']}: search for it in the project's issues")
    assert event["environment"] == "qa"
    assert event["release"] == "9.8.7-test"
    assert event["level"] == "info"
    assert event["tags"]["voicegate.check"] == "sentry-test"
    assert TEST_JWT_SECRET not in sentry.raw_text()  # the server's scrubber was on the way
    assert done.stderr == ""
    assert_no_key(done)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"status": 403, "body": b'{"detail":"event submission rejected with_reason: X"}'},
            "❌ Sentry: rejected with HTTP 403 (event submission rejected with_reason: X): "
            "Sentry does not accept this DSN's key for this project",
        ),
        (
            {"status": 429, "headers": {"Retry-After": "60"}, "body": b'{"detail":"quota"}'},
            "❌ Sentry: rate limited, HTTP 429, retry after 60 s (quota): the project or "
            "organisation is over its quota or rate limit, the event was not kept",
        ),
        (
            {"status": 502, "body": b"<html>Bad Gateway</html>"},
            "❌ Sentry: answered HTTP 502 (<html>Bad Gateway</html>): an error on Sentry's side",
        ),
    ],
    ids=["403", "429", "502"],
)  # fmt: skip
def test_a_refusal_is_reported_with_its_status(answer: dict[str, Any], expected: str) -> None:
    with SentryStandin(**answer) as sentry:
        done = sentry_test({"SENTRY_DSN": dsn_of(sentry)})
        assert sentry.payloads(), "the event reached Sentry, which refused it"
    assert done.returncode == 1
    assert done.stdout.splitlines()[1].startswith(expected), done.stdout
    assert_no_key(done)


def test_a_sentry_that_never_answers_is_reported_after_the_timeout() -> None:
    with SentryStandin(response_delay=30) as sentry:
        done = sentry_test({"SENTRY_DSN": dsn_of(sentry)}, "--timeout", "1")
        event_id = sentry.wait_for(lambda e: True, timeout=5)["event_id"]
    assert done.returncode == 1
    verdict = done.stdout.splitlines()[1]
    assert verdict.startswith("❌ Sentry: no answer from http://127.0.0.1:"), verdict
    assert "within 1 s (a firewall" in verdict
    assert verdict.endswith(f"event id {event_id} was not confirmed")
    assert_no_key(done)


def test_an_unreachable_sentry_says_why() -> None:
    port = free_port()
    done = sentry_test({"SENTRY_DSN": f"http://{PUBLIC_KEY}@127.0.0.1:{port}/7"})
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"Sentry test event for project 7 at http://127.0.0.1:{port} "
        f"(environment development, release {package_version()})",
        f"❌ Sentry: cannot reach http://127.0.0.1:{port}: connection refused (nothing listens "
        "on that host and port)",
    ]
    assert_no_key(done)


def test_without_a_dsn_it_says_so() -> None:
    done = sentry_test({})
    assert done.returncode == 1
    assert done.stdout.startswith("❌ Sentry: SENTRY_DSN is not set, so the server reports no")
    assert done.stderr == ""


def test_a_malformed_dsn_is_a_configuration_error() -> None:
    done = sentry_test({"SENTRY_DSN": f"{PUBLIC_KEY}@sentry.example.com/7"})
    assert done.returncode == 2
    assert done.stderr.startswith("voicegate: configuration error: SENTRY_DSN: must start with")
    assert done.stdout == ""
    assert_no_key(done)
