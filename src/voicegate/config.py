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

from voicegate._redact import mask_url
from voicegate.errors import ConfigError

__all__ = ["RateLimit", "Settings", "load_settings", "package_version"]

_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


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
    app_env: str = "development"
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    app_version: str = Field(default_factory=package_version)
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    weaviate_url: str | None = None
    drain_seconds: float = Field(10.0, ge=0)
    metrics_sample_seconds: float = Field(5.0, gt=0)

    @field_validator(
        "openai_api_key", "jwt_secret", "jwt_public_key", "jwt_audience", "jwt_issuer",
        "sentry_dsn", "sentry_environment", "weaviate_url", mode="before",
    )  # fmt: skip
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

    @field_validator("log_format", "voice_engine", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in REDIS_SCHEMES)}")
        if parts.scheme == "unix":
            return value
        hosts = parts.netloc.rpartition("@")[2].split(",")
        for host in hosts:
            name, colon, port = host.rpartition(":") if "]" not in host[-1:] else ("", "", "")
            if not (name if colon else host):
                raise ValueError("no host in the URL")
            if colon and not (port.isdigit() and 0 < int(port) < 65536):
                # Not the value: a password with an unencoded `#` or `/` would land here.
                raise ValueError("port must be a number from 1 to 65535")
        if len(hosts) > 1 and "+sentinel" not in parts.scheme:
            raise ValueError("several hosts are only allowed in redis+sentinel:// URLs")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("too short: use at least 32 bytes (e.g. `openssl rand -hex 32`)")
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
        return self.app_env.lower() == "production"

    @property
    def engine_name(self) -> Literal["openai", "local"]:
        if self.voice_engine == "auto":
            return "openai" if self.openai_api_key is not None else "local"
        return self.voice_engine

    @property
    def redis_op_timeout(self) -> float:
        return self.redis_op_timeout_ms / 1000

    @cached_property
    def redis_url_masked(self) -> str:
        return mask_url(self.redis_url.get_secret_value())

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret, for scrubbing logs and error reports."""
        values: list[str] = []
        for secret in (self.openai_api_key, self.jwt_secret, self.sentry_dsn):
            if secret is not None:
                values.append(secret.get_secret_value())
        password = urlsplit(self.redis_url.get_secret_value()).password
        if password:
            values.append(password)
        return tuple(values)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation failure into one operator-readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {message}" if where else message) from None
