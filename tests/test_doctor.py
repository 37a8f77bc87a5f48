"""`voicegate doctor` against real redis-server processes: each failure names its step and fix."""

from __future__ import annotations

import io
import re

import pytest
import redis

from tests.redis_server import RedisServer, free_port
from voicegate._redact import mask_url
from voicegate.cli import doctor

PASSWORD = "s3cret-redis-pass-XYZ"  # the redis_server_with_password fixture's


def diagnose(url: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = doctor.run(url, out, timeout=2)
    return code, out.getvalue().splitlines()


def line(lines: list[str], prefix: str) -> str:
    """The one line starting with `prefix` (an icon and a step name)."""
    found = [text for text in lines if text.startswith(prefix)]
    assert len(found) == 1, f"no single {prefix!r} line in:\n" + "\n".join(lines)
    return found[0]


def failure(lines: list[str], step: str) -> tuple[str, str, str]:
    """The failing step's line, its likely cause and its fix; the failure is the last output."""
    assert lines[-3].startswith(f"❌ {step}: "), "\n".join(lines)
    assert lines[-2].startswith("   Likely cause: ") and lines[-1].startswith("   Fix: ")
    assert sum(text.startswith("❌") for text in lines) == 1
    return lines[-3], lines[-2], lines[-1]


def test_healthy_server_passes_every_step(redis_server: RedisServer) -> None:
    code, lines = diagnose(redis_server.url)

    assert code == 0
    steps = [text.split(":")[0] for text in lines[:-1]]
    assert steps == [
        "✅ URL", "✅ DNS", "✅ TCP", "ℹ️ TLS", "✅ AUTH", "✅ PING",
        "✅ Version", "✅ Latency", "ℹ️ Clients", "ℹ️ Memory",
    ]  # fmt: skip
    assert line(lines, "✅ URL:") == (
        f"✅ URL: {mask_url(redis_server.url)} (standalone, no TLS, 127.0.0.1:{redis_server.port})"
    )
    assert line(lines, "✅ Version:").startswith("✅ Version: Redis ")
    assert line(lines, "✅ Version:").endswith("(standalone, master)")
    latency = line(lines, "✅ Latency:")
    assert re.fullmatch(r"✅ Latency: \d+\.\d+ ms \(median of 5 PINGs\)", latency)
    assert line(lines, "ℹ️ Memory:").endswith("used, no maxmemory limit")
    assert lines[-1] == "All checks passed: voicegate can use this Redis."


def test_password_is_accepted_and_never_printed(redis_server_with_password: RedisServer) -> None:
    code, lines = diagnose(redis_server_with_password.url)

    assert code == 0
    assert line(lines, "✅ AUTH:") == "✅ AUTH: password accepted"
    assert f"redis://default:***@127.0.0.1:{redis_server_with_password.port}" in lines[0]
    assert PASSWORD not in "\n".join(lines)


def test_wrong_password_fails_at_auth(redis_server_with_password: RedisServer) -> None:
    wrong = "not-the-pass-9876"
    code, lines = diagnose(redis_server_with_password.url.replace(PASSWORD, wrong))

    assert code == 1
    problem, cause, fix = failure(lines, "AUTH")
    assert "rejected the credentials" in problem and "password" in cause
    assert "check the password in REDIS_URL" in fix
    output = "\n".join(lines)
    assert PASSWORD not in output and wrong not in output
    assert not any(text.startswith("✅ PING") for text in lines)


def test_missing_password_fails_with_noauth(redis_server_with_password: RedisServer) -> None:
    code, lines = diagnose(f"redis://127.0.0.1:{redis_server_with_password.port}/0")

    assert code == 1
    problem, _, fix = failure(lines, "AUTH")
    assert "requires a password" in problem and "NOAUTH" in problem
    assert fix.startswith("   Fix: add the password to REDIS_URL")


def test_closed_port_fails_at_tcp() -> None:
    port = free_port()  # bound and released: nothing listens there
    code, lines = diagnose(f"redis://127.0.0.1:{port}/0")

    assert code == 1
    problem, cause, fix = failure(lines, "TCP")
    assert problem == f"❌ TCP: 127.0.0.1:{port} refused the connection"
    assert "port is closed or nothing is listening" in cause and "firewall" in cause
    assert f"port {port}" in fix


def test_unresolvable_host_fails_at_dns() -> None:
    code, lines = diagnose("redis://nohost.invalid:6379/0")

    assert code == 1
    problem, _, fix = failure(lines, "DNS")
    assert problem.startswith("❌ DNS: cannot resolve nohost.invalid")
    assert "check the host name" in fix and "IP" in fix
    assert not any("TCP" in text for text in lines)


def test_tls_expected_but_the_server_speaks_plain_text(redis_server: RedisServer) -> None:
    code, lines = diagnose(f"rediss://127.0.0.1:{redis_server.port}/0?ssl_cert_reqs=none")

    assert code == 1
    problem, _, fix = failure(lines, "TLS")
    assert problem == "❌ TLS: TLS expected but the server does not speak TLS"
    assert "use redis://" in fix and "enable TLS on the server" in fix


def test_server_expects_tls_but_the_url_is_plain(redis_tls_server: RedisServer) -> None:
    code, lines = diagnose(f"redis://127.0.0.1:{redis_tls_server.port}/0")

    assert code == 1
    problem, _, fix = failure(lines, "TLS")
    assert problem == "❌ TLS: the server expects TLS but the URL is redis://"
    assert "use rediss://" in fix


def test_tls_with_the_servers_ca_passes(redis_tls_server: RedisServer) -> None:
    code, lines = diagnose(redis_tls_server.url)  # rediss://…?ssl_ca_certs=<the test CA>

    assert code == 0, "\n".join(lines)
    tls = line(lines, "✅ TLS:")
    assert tls.startswith("✅ TLS: TLSv1.") and "certificate and host name verified" in tls
    assert line(lines, "✅ PING:") == "✅ PING: PONG"


def test_untrusted_certificate_names_ssl_ca_certs(redis_tls_server: RedisServer) -> None:
    code, lines = diagnose(f"rediss://127.0.0.1:{redis_tls_server.port}/0")

    assert code == 1
    problem, _, fix = failure(lines, "TLS")
    assert "certificate was rejected" in problem and "ssl_ca_certs=" in fix


def test_ssl_options_on_a_plain_url_fail_at_url(redis_tls_server: RedisServer) -> None:
    url = redis_tls_server.url.replace("rediss://", "redis://")

    code, lines = diagnose(url)

    assert code == 1
    problem, _, fix = failure(lines, "URL")
    assert "ssl_ca_certs given but the URL is redis://" in problem and "rediss://" in fix


def test_memory_above_the_threshold_warns_without_failing(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(int(used / 0.9)))
    client.close()

    code, lines = diagnose(redis_server.url)

    assert code == 0
    memory = line(lines, "⚠️ Memory:")
    assert "above 80%" in memory and "raise maxmemory" in memory


# -- sentinel and cluster: the extra server processes these need -----------------------------


@pytest.mark.slow
def test_sentinel_finds_the_master(sentinel_port: int, redis_server: RedisServer) -> None:
    code, lines = diagnose(f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster")

    assert code == 0, "\n".join(lines)
    master = line(lines, "✅ Sentinel:")
    assert master == f"✅ Sentinel: master 'mymaster' is at 127.0.0.1:{redis_server.port}"
    assert line(lines, "✅ PING:") == "✅ PING: PONG"


@pytest.mark.slow
def test_sentinel_with_an_unknown_service_fails(sentinel_port: int) -> None:
    code, lines = diagnose(f"redis+sentinel://127.0.0.1:{sentinel_port}/nosuchmaster")

    assert code == 1
    problem, _, fix = failure(lines, "Sentinel")
    assert "'nosuchmaster'" in problem and "sentinel_password" in fix


@pytest.mark.slow
def test_cluster_reports_its_state(cluster_port: int) -> None:
    code, lines = diagnose(f"redis+cluster://127.0.0.1:{cluster_port}")

    assert code == 0, "\n".join(lines)
    assert line(lines, "✅ Cluster:").startswith("✅ Cluster: state ok, 16384/16384 slots ok")


def test_cluster_url_to_a_standalone_server_fails(redis_server: RedisServer) -> None:
    code, lines = diagnose(f"redis+cluster://127.0.0.1:{redis_server.port}")

    assert code == 1
    problem, _, fix = failure(lines, "Cluster")
    assert problem == "❌ Cluster: the server runs in standalone mode, not in cluster mode"
    assert "use redis://" in fix


def test_acl_user_without_info_names_the_permission(redis_server: RedisServer) -> None:
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.acl_setuser("doc", enabled=True, passwords=["+doc-pass-1234"], keys=["*"],
                          commands=["+ping", "+hello", "+client"])  # fmt: skip

    code, lines = diagnose(f"redis://doc:doc-pass-1234@127.0.0.1:{redis_server.port}/0")

    assert code == 1
    problem, _, fix = failure(lines, "Version")
    assert "no permissions to run the 'info' command" in problem and "+info" in fix
    assert "doc-pass-1234" not in "\n".join(lines)
