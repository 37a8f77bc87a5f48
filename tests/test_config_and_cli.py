"""Settings validation, the `token` command, JWT variants and the development token route."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.clients import open_voice, refused
from tests.servers import TEST_JWT_SECRET, InProcessServer, Serve, clean_environment
from voicegate.auth.tokens import TokenVerifier
from voicegate.config import RateLimit, Settings, load_settings
from voicegate.errors import AuthError, ConfigError


async def dev_token_status(gateway: InProcessServer) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.post(f"{gateway.http}/api/v1/dev/token")).status_code


def voicegate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicegate", *args], env=clean_environment(**(env or {})),
        capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REDIS_OP_TIMEOUT_MS", "soon", "REDIS_OP_TIMEOUT_MS: Input should be a valid integer"),
        ("VOICE_RATE_LIMIT", "5 per hour", "VOICE_RATE_LIMIT: expected N/second"),
        ("REDIS_URL", "http://:hunter2-password@example.com", "REDIS_URL: scheme must be one of"),
        ("JWT_SECRET", "short-secret", "JWT_SECRET: too short"),
        ("REDIS_URL", "redis://default:hunter2pass#x@h:6379", "REDIS_URL: port must be a number"),
        ("REDIS_URL", "redis+sentinel://h1:x/mymaster", "REDIS_URL: port must be a number"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT: Input should be 'text' or 'json'"),
        ("VOICE_ENGINE", "openai", "VOICE_ENGINE=openai requires OPENAI_API_KEY"),
        ("APP_ENV", "production", "APP_ENV=production requires JWT_SECRET or JWT_PUBLIC_KEY"),
        # A typo must not silently run as development, with the dev token route open.
        ("APP_ENV", "prod", "APP_ENV: Input should be 'development' or 'production'"),
    ],
)
def test_bad_configuration_stops_with_one_line(variable: str, value: str, expected: str) -> None:
    result = voicegate("serve", "--port", "1", env={variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("voicegate: configuration error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    if variable in ("REDIS_URL", "JWT_SECRET"):
        assert value not in result.stderr and "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "pubkey0123456789:secret0123456789@o1.ingest.sentry.io/5",
            "must start with https:// (or http://)",
        ),
        ("https://o1.ingest.sentry.io/5", "no public key before the @"),
        (
            "https://pubkey0123456789@o1.ingest.sentry.io/",
            "the path must end with the numeric project id",
        ),
        (
            "https://pubkey0123456789@o1.ingest.sentry.io:port/5",
            "not a URL (is the port a number?)",
        ),
    ],
    ids=["no-scheme", "no-key", "no-project", "bad-port"],
)
def test_a_malformed_sentry_dsn_stops_start_up_without_showing_it(dsn: str, expected: str) -> None:
    result = voicegate("serve", "--port", "1", env={"SENTRY_DSN": dsn, "REDIS_ENABLED": "false"})
    assert result.returncode == 2
    assert result.stderr.startswith(f"voicegate: configuration error: SENTRY_DSN: {expected}; ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "pubkey0123456789" not in result.stderr and "secret0123456789" not in result.stderr


def test_env_file_is_read(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(str(tmp_path))
    with open(".env", "w") as env_file:
        env_file.write("VOICE_RATE_LIMIT=7/minute\nVOICE_ALLOWED_PLANS=Pro, Elite\n")
    settings = load_settings()
    assert settings.voice_rate_limit == RateLimit(7, "minute")
    assert settings.voice_allowed_plans == frozenset({"pro", "elite"})


def test_token_command_prints_a_verifiable_jwt() -> None:
    args = ["--user", "u-42", "--plan", "Elite", "--email", "a@b.c", "--ttl", "120"]
    result = voicegate("token", *args, env={"JWT_SECRET": TEST_JWT_SECRET})
    assert result.returncode == 0, result.stderr
    identity = TokenVerifier(Settings(jwt_secret=TEST_JWT_SECRET)).verify(result.stdout.strip())
    assert (identity.user_id, identity.plan, identity.email) == ("u-42", "Elite", "a@b.c")


def test_token_command_without_secret_says_so() -> None:
    result = voicegate("token", "--user", "u", "--plan", "elite")
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr and "Traceback" not in result.stderr


def test_audience_and_issuer_are_checked() -> None:
    settings = Settings(jwt_secret=TEST_JWT_SECRET, jwt_audience="voice", jwt_issuer="https://id")
    verifier = TokenVerifier(settings)
    good = verifier.mint("u", "elite")
    assert verifier.verify(good).user_id == "u"
    other = TokenVerifier(
        Settings(jwt_secret=TEST_JWT_SECRET, jwt_audience="other", jwt_issuer="https://id")
    )
    with pytest.raises(AuthError, match="audience"):
        verifier.verify(other.mint("u", "elite"))
    with pytest.raises(AuthError, match="issuer"):
        verifier.verify(
            TokenVerifier(
                Settings(
                    jwt_secret=TEST_JWT_SECRET, jwt_audience="voice", jwt_issuer="https://evil"
                )
            ).mint("u", "elite")
        )


async def test_es256_public_key_tokens(serve: Serve) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    gateway = await serve(
        redis_enabled=False, jwt_secret=None, jwt_public_key=public, jwt_algorithms="ES256"
    )
    token = jwt.encode({"sub": "es", "plan": "elite", "exp": 2_000_000_000}, key, algorithm="ES256")
    client = await open_voice(gateway, token)
    await client.close()
    forged = jwt.encode({"sub": "es", "plan": "elite", "exp": 2_000_000_000},
                        TEST_JWT_SECRET, algorithm="HS256")  # fmt: skip
    assert (await refused(gateway, forged))[0] == 4001
    assert await dev_token_status(gateway) == 404


async def test_development_without_jwt_config_has_a_dev_token_route(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, jwt_secret=None)
    await gateway.wait_for_log("ephemeral development secret")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{gateway.http}/api/v1/dev/token", json={"user_id": "demo", "plan": "elite"}
        )
    assert response.status_code == 200
    token = response.json()["token"]
    client = await open_voice(gateway, token)
    assert client.first is not None
    await client.close()
    assert token not in gateway.log


async def test_production_has_no_dev_token_route(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False, app_env="production")
    assert await dev_token_status(gateway) == 404


def test_settings_reject_production_without_jwt() -> None:
    with pytest.raises(ConfigError, match="production"):
        load_settings(app_env="production", jwt_secret=None, jwt_public_key=None)


async def test_a_configured_secret_never_signs_over_http(serve: Serve) -> None:
    gateway = await serve(redis_enabled=False)  # development, JWT_SECRET set
    assert await dev_token_status(gateway) == 404


async def test_a_token_for_a_key_of_another_kind_is_a_4001(serve: Serve) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    # Algorithms default to RS256,ES256: an RS256 token meets an EC key.
    gateway = await serve(redis_enabled=False, jwt_secret=None, jwt_public_key=public)
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "x", "plan": "elite", "exp": 2_000_000_000}, rsa_key, "RS256")
    assert await refused(gateway, token) == (4001, "Invalid token")
    assert "Traceback" not in gateway.log


def test_hs_algorithms_with_a_public_key_are_refused() -> None:
    with pytest.raises(ConfigError, match="HS"):
        load_settings(jwt_public_key="-----BEGIN PUBLIC KEY-----", jwt_algorithms="HS256,RS256")
