"""`RedisTarget`: every REDIS_URL form of contract §1 read once, masked, and never leaked."""

from __future__ import annotations

import warnings

import pytest
import redis

from tests.redis_server import RedisServer
from voicegate.config import Settings, load_settings
from voicegate.errors import ConfigError
from voicegate.storage import RedisTarget, client_for
from voicegate.storage.target import secrets_in

PASSWORD = "pa%40ss%3Aw%2Frd"  # `@`, `:` and `/` percent-encoded, as a URL needs them
DECODED = "pa@ss:w/rd"


@pytest.mark.parametrize(
    ("url", "topology", "tls", "nodes", "db", "service", "masked"),
    [
        ("redis://localhost:6379/0", "standalone", False, [("localhost", 6379)], 0, None,
         "redis://localhost:6379"),
        ("redis://h", "standalone", False, [("h", 6379)], 0, None, "redis://h"),
        ("redis://:secret-1@h:6380/2", "standalone", False, [("h", 6380)], 2, None,
         "redis://default:***@h:6380/2"),
        ("redis://alice:secret-1@h/0", "standalone", False, [("h", 6379)], 0, None,
         "redis://alice:***@h"),
        ("rediss://:secret-1@h:6380/0?ssl_cert_reqs=none", "standalone", True, [("h", 6380)], 0,
         None, "rediss://default:***@h:6380?ssl_cert_reqs=none"),
        ("redis://[::1]:7000/3", "standalone", False, [("::1", 7000)], 3, None,
         "redis://[::1]:7000/3"),
        ("redis://[2001:db8::1]", "standalone", False, [("2001:db8::1", 6379)], 0, None,
         "redis://[2001:db8::1]"),
        ("unix:///run/redis.sock?db=4", "unix", False, [], 4, None, "unix:///run/redis.sock?db=4"),
        ("unix://:secret-1@/run/redis.sock", "unix", False, [], 0, None,
         "unix://default:***@/run/redis.sock"),
        ("redis+sentinel://:secret-1@s1:26380,[::1],s3/mymaster/1", "sentinel", False,
         [("s1", 26380), ("::1", 26379), ("s3", 26379)], 1, "mymaster",
         "redis+sentinel://default:***@s1:26380,[::1],s3/mymaster/1"),
        ("rediss+sentinel://s1/mymaster?sentinel_password=secret-2", "sentinel", True,
         [("s1", 26379)], 0, "mymaster", "rediss+sentinel://s1/mymaster?sentinel_password=***"),
        ("redis+cluster://c1:7000", "cluster", False, [("c1", 7000)], 0, None,
         "redis+cluster://c1:7000"),
        ("rediss+cluster://:secret-1@c1", "cluster", True, [("c1", 6379)], 0, None,
         "rediss+cluster://default:***@c1"),
    ],
)  # fmt: skip
def test_every_url_form(
    url: str,
    topology: str,
    tls: bool,
    nodes: list[tuple[str, int]],
    db: int,
    service: str | None,
    masked: str,
) -> None:
    target = RedisTarget.parse(url)
    assert (target.topology, target.tls, list(target.nodes)) == (topology, tls, nodes)
    assert (target.db, target.service_name, target.masked) == (db, service, masked)
    assert target.scheme == url.partition("://")[0]
    assert "secret" not in target.masked and "secret" not in repr(target)
    assert target.path == ("/run/redis.sock" if topology == "unix" else "")


def test_credentials_are_percent_decoded_and_every_form_is_a_secret() -> None:
    url = f"redis://bob:{PASSWORD}@h:6379/0?ssl_password=key-pass&sentinel_password=s%2Bp"
    target = RedisTarget.parse(url)
    assert (target.username, target.password) == ("bob", DECODED)
    assert set(target.secrets) >= {PASSWORD, DECODED, "key-pass", "s%2Bp", "s+p"}
    assert target.masked == "redis://bob:***@h:6379?ssl_password=***&sentinel_password=***"
    assert PASSWORD not in repr(target) and DECODED not in repr(target)


def test_a_password_in_the_query_counts() -> None:
    target = RedisTarget.parse("redis://h:1/0?password=q-secret-9")
    assert target.password == "q-secret-9" and target.secrets == ("q-secret-9",)
    assert target.masked == "redis://h:1?password=***"


def test_node_url_keeps_credentials_and_options() -> None:
    sentinel = RedisTarget.parse(
        f"rediss+sentinel://:{PASSWORD}@s1/mymaster/2?ssl_cert_reqs=none&sentinel_password=sp"
    )
    node = sentinel.node_url("10.0.0.5", 6390, drop="sentinel_password")
    assert node == f"rediss://:{PASSWORD}@10.0.0.5:6390/2?ssl_cert_reqs=none"
    assert RedisTarget.parse(node).password == DECODED
    assert RedisTarget.parse("redis+cluster://c").node_url("::1", 7000) == "redis://[::1]:7000"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:hunter2-pass@example.com", "scheme must be one of redis://, rediss://, unix://"),
        ("redis://default:hunter2pass#x@h:6379", "port must be a number from 1 to 65535"),
        ("redis://default:hunter2/pass@h:6379", "port must be a number from 1 to 65535"),
        ("redis+sentinel://:hunter2pass@h1:x/mymaster", "port must be a number from 1 to 65535"),
        ("redis://:hunter2pass@h:70000", "port must be a number from 1 to 65535"),
        ("redis://:hunter2pass@a:1,b:2/0", "several hosts are only allowed in redis+sentinel://"),
        ("redis://:hunter2pass@:6379", "no host in the URL"),
        ("redis://:hunter2pass@::1/0", "write an IPv6 host in brackets"),
        ("redis://:hunter2pass@[::1/0", "write an IPv6 host in brackets"),
        ("redis+sentinel://:hunter2pass@s1:26379", "no service name"),
        ("unix://:hunter2pass@", "no socket path"),
        ("redis://:hunter2pass@h/zero", "the database must be a number"),
        ("redis://:hunter2pass@h/0/1", "the path must be a database number"),
    ],
)
def test_errors_name_the_problem_never_the_url(url: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        RedisTarget.parse(url)
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value) and url not in str(raised.value)
    with pytest.raises(ConfigError) as config_error:
        load_settings(redis_url=url)
    assert str(config_error.value).startswith("REDIS_URL: ")
    assert "hunter2" not in str(config_error.value)


def test_secrets_in_a_url_that_does_not_parse() -> None:
    assert "hunter2pass#x" in secrets_in("redis://default:hunter2pass#x@h:6379")
    assert secrets_in("redis://h:6379/0?password=p-1") == ("p-1",)


def test_settings_read_the_url_through_the_target() -> None:
    settings = Settings(redis_url=f"redis://:{PASSWORD}@h:6379/0")
    assert settings.redis_target.password == DECODED
    assert settings.redis_url_masked == "redis://default:***@h:6379"
    assert PASSWORD in settings.secret_values() and DECODED in settings.secret_values()


async def test_the_client_reaches_the_server_it_names(
    redis_server_with_password: RedisServer,
) -> None:
    target = RedisTarget.parse(redis_server_with_password.url)
    client = client_for(target, timeout=2)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    refused = client_for(RedisTarget.parse(f"redis://127.0.0.1:{target.nodes[0][1]}"), timeout=2)
    try:
        with pytest.raises(redis.AuthenticationError):
            await refused.ping()
    finally:
        await refused.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6390/0",
        "redis+sentinel://127.0.0.1:26390/mymaster",
        "redis+cluster://127.0.0.1:7390",
    ],
)
def test_clients_use_no_deprecated_option(url: str) -> None:
    # redis-py warns when a client is built (`retry_on_timeout` since 6.0); nothing connects.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client_for(RedisTarget.parse(url), timeout=1)
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == []
