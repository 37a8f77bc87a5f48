"""The one settings object, read from the environment and `.env` (contract §1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from voicegate.errors import ConfigError
from voicegate.storage.base import RateWindow
from voicegate.storage.target import RedisTarget

__all__ = ["RateLimit", "Settings", "load_settings", "package_version"]

# Session fields a client may change (VOICE_CLIENT_CAN_SET); the last three are the operator's
# to hand over, off by default.
CLIENT_SETTABLE = frozenset(
    {"voice", "speed", "turn_detection", "instructions", "tools", "tool_choice"}
)
DEFAULT_CAN_SET = frozenset({"voice", "speed", "turn_detection"})
_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


def package_version() -> str:
    try:
        return version("voicegate")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`count` new sessions per user per rolling `window_seconds`."""

    count: int
    unit: str

    @property
    def window_seconds(self) -> int:
        return _WINDOWS[self.unit]

    @property
    def window(self) -> RateWindow:
        """The window as storage counts it (storage knows nothing of the refusal's wording)."""
        return RateWindow(self.count, self.window_seconds)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE.match(text)
        if not match or int(match[1]) < 1:
            raise ValueError("expected N/second, N/minute, N/hour or N/day with N >= 1")
        return cls(int(match[1]), match[2].lower())

    def __str__(self) -> str:
        return f"{self.count}/{self.unit}"

    def exceeded_reason(self) -> str:
        return f"Rate limit exceeded ({self.count} sessions/{self.unit} max)"


class Settings(BaseSettings):
    """Every variable of contract §1, typed and validated once at start-up."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    redis_url: SecretStr = SecretStr("redis://localhost:6379/0")
    redis_enabled: bool = True
    retry_max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff_factor: float = Field(2.0, ge=1.0, le=60.0)
    retry_base_delay: float = Field(0.2, gt=0, le=60.0)
    retry_max_delay: float = Field(30.0, gt=0, le=3600.0)
    redis_op_timeout_ms: int = Field(250, ge=1, le=60_000)
    session_ttl_seconds: int = Field(3600, ge=10)
    voice_rate_limit: Annotated[RateLimit, NoDecode] = RateLimit(5, "hour")
    voice_max_session_seconds: float = Field(1800, gt=0)
    voice_max_concurrent_per_user: int = Field(2, ge=1)
    voice_allowed_plans: Annotated[frozenset[str], NoDecode] = frozenset({"elite", "intelia"})
    voice_max_message_bytes: int = Field(256 * 1024, ge=1024)
    voice_client_events: Literal["auto", "ga", "beta"] = "auto"
    voice_resume_grace_seconds: float = Field(120.0, ge=0)
    voice_client_can_set: Annotated[frozenset[str], NoDecode] = DEFAULT_CAN_SET
    voice_client_buffer_bytes: int = Field(1024 * 1024, ge=64 * 1024)
    voice_slow_client_seconds: float = Field(15.0, gt=0)
    voice_conversation_max_turns: int = Field(50, ge=0)
    voice_instructions: str = "You are a helpful voice assistant. Answer briefly and naturally."
    voice_default_voice: str = "alloy"
    enable_voice_realtime: bool = True
    voice_engine: Literal["auto", "openai", "local"] = "auto"
    openai_api_key: SecretStr | None = None
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_realtime_model: str = "gpt-realtime"
    jwt_secret: SecretStr | None = None
    jwt_public_key: SecretStr | None = None
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = ()
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_plan_claim: str = Field("plan", pattern=r"^[^.\s]+(\.[^.\s]+)*$")
    plan_lookup_url: str | None = None
    plan_lookup_token: SecretStr | None = None
    plan_cache_seconds: int = Field(300, ge=0)
    plan_lookup_timeout_seconds: float = Field(3.0, gt=0, le=60)
    app_env: Literal["development", "production"] = "development"
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    app_version: str = Field(default_factory=package_version)
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    weaviate_url: str | None = None
    drain_seconds: float = Field(10.0, ge=0)
    http_max_header_bytes: int = Field(32 * 1024, ge=4096)
    http_max_headers: int = Field(100, ge=10)
    http_head_timeout_seconds: float = Field(10.0, gt=0)
    metrics_sample_seconds: float = Field(5.0, gt=0)

    @field_validator(
        "openai_api_key",
        "jwt_secret",
        "jwt_public_key",
        "jwt_audience",
        "jwt_issuer",
        "sentry_dsn",
        "sentry_environment",
        "weaviate_url",
        "plan_lookup_url",
        "plan_lookup_token",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `JWT_SECRET=` in a .env file means "not configured", not "the empty secret".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("voice_rate_limit", mode="before")
    @classmethod
    def _parse_rate(cls, value: Any) -> Any:
        return RateLimit.parse(value) if isinstance(value, str) else value

    @field_validator("voice_allowed_plans", mode="before")
    @classmethod
    def _parse_plans(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [p for p in (part.strip() for part in value.split(",")) if p]
            if not value:
                raise ValueError("list at least one plan")
        return frozenset(p.lower() for p in value)

    @field_validator("voice_client_can_set", mode="before")
    @classmethod
    def _parse_can_set(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {part.strip().lower() for part in value.split(",") if part.strip()}
        unknown = sorted(set(value) - CLIENT_SETTABLE)
        if unknown:
            known = ", ".join(sorted(CLIENT_SETTABLE))
            raise ValueError(f"unknown field {', '.join(unknown)}: use any of {known}")
        return frozenset(value)

    @field_validator("plan_lookup_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _parse_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(a.strip() for a in value.split(",") if a.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", "voice_engine", "voice_client_events", "app_env", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        RedisTarget.parse(value.get_secret_value())  # its errors never contain the URL
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("too short: use at least 32 bytes (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("sentry_dsn")
    @classmethod
    def _check_sentry_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = _sentry_dsn_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(
                    f"{problem}; expected https://<public key>@<host>/<project id>, as the "
                    "project's Client Keys (DSN) page shows it"
                )
        return value

    @field_validator("openai_realtime_url")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError("must start with ws:// or wss://")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.jwt_public_key is None and not self.jwt_algorithms:
            self.jwt_algorithms = ("HS256",)
        elif not self.jwt_algorithms:
            self.jwt_algorithms = ("RS256", "ES256")
        symmetric = [a for a in self.jwt_algorithms if a.upper().startswith("HS")]
        if self.jwt_public_key is not None and symmetric:
            raise ValueError("JWT_ALGORITHMS: HS* algorithms cannot be used with JWT_PUBLIC_KEY")
        if self.is_production and self.jwt_secret is None and self.jwt_public_key is None:
            raise ValueError("APP_ENV=production requires JWT_SECRET or JWT_PUBLIC_KEY")
        if self.voice_engine == "openai" and self.openai_api_key is None:
            raise ValueError("VOICE_ENGINE=openai requires OPENAI_API_KEY")
        return self

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def engine_name(self) -> Literal["openai", "local"]:
        if self.voice_engine == "auto":
            return "openai" if self.openai_api_key is not None else "local"
        return self.voice_engine

    @property
    def redis_op_timeout(self) -> float:
        return self.redis_op_timeout_ms / 1000

    @cached_property
    def redis_target(self) -> RedisTarget:
        """`REDIS_URL`, parsed (already validated, so this never raises)."""
        return RedisTarget.parse(self.redis_url.get_secret_value())

    @property
    def redis_url_masked(self) -> str:
        return self.redis_target.masked

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret, for scrubbing logs and error reports."""
        values: list[str] = []
        for secret in (
            self.openai_api_key,
            self.jwt_secret,
            self.sentry_dsn,
            self.plan_lookup_token,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        values.extend(self.redis_target.secrets)
        return tuple(values)


def _sentry_dsn_problem(dsn: str) -> str | None:
    """Why sentry-sdk would refuse `dsn` (and the server fail to start), in words that never
    repeat any part of it: the key before the @ is a credential."""
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - reading it raises ValueError when the port is not a number
    except ValueError:
        return "not a URL (is the port a number?)"
    if parts.scheme not in ("http", "https"):
        return "must start with https:// (or http://)"
    if not parts.hostname:
        return "no host"
    if not parts.username:
        return "no public key before the @"
    if not parts.path.rsplit("/", 1)[-1].isdigit():
        return "the path must end with the numeric project id"
    from sentry_sdk.utils import BadDsn, Dsn  # only when a DSN is set

    try:
        Dsn(dsn)
    except BadDsn:
        return "not a DSN sentry-sdk accepts"
    return None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation failure into one operator-readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {message}" if where else message) from None
