"""Client tokens: JWTs with `sub`, `exp`, an optional `email` and a plan (contract §1).

The plan sits at `JWT_PLAN_CLAIM`, a dot path (`plan`, or `app_metadata.plan` for tokens issued
by Supabase); a token without one is still valid, and its plan is looked up (auth/plans.py).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from voicegate.config import Settings
from voicegate.errors import AuthError, ConfigError

log = logging.getLogger("voicegate.auth")

__all__ = ["Identity", "TokenVerifier", "VerifiedToken", "mint_token"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a client is, and its plan."""

    user_id: str
    plan: str
    email: str | None = None


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token says: the user, and the plan when the token carries one."""

    user_id: str
    plan: str | None
    email: str | None = None


class TokenVerifier:
    """Verifies client tokens with the configured secret or public key and claim checks."""

    def __init__(self, settings: Settings) -> None:
        self.algorithms = list(settings.jwt_algorithms)
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.plan_claim = settings.jwt_plan_claim
        self.ephemeral = False
        if settings.jwt_public_key is not None:
            self._key: str = settings.jwt_public_key.get_secret_value()
        elif settings.jwt_secret is not None:
            self._key = settings.jwt_secret.get_secret_value()
        elif settings.is_production:  # config validation already refuses this; be explicit
            raise ConfigError("APP_ENV=production requires JWT_SECRET or JWT_PUBLIC_KEY")
        else:
            self._key = secrets.token_urlsafe(32)
            self.ephemeral = True
            log.warning(
                "⚠️ No JWT_SECRET configured: using an ephemeral development secret; "
                "tokens from POST /api/v1/dev/token are valid until this process exits"
            )

    @property
    def can_mint(self) -> bool:
        """Only the ephemeral development secret mints tokens over HTTP: a configured secret is
        shared with whoever issues real tokens, and must never sign on request."""
        return self.ephemeral

    def mint(self, user_id: str, plan: str, email: str | None = None, ttl: int = 3600) -> str:
        return mint_token(self._key, user_id, plan, email, ttl, self.audience, self.issuer)

    def verify(self, token: str | None) -> VerifiedToken:
        """The identity in `token`, or `AuthError` saying what is wrong (never the token)."""
        if not token:
            raise AuthError("Missing token")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["sub", "exp"]},
            )
            exp = claims["exp"]
            if not isinstance(exp, int | float) or isinstance(exp, bool):
                # PyJWT takes "9999999999" as a number; the JWT spec says NumericDate.
                raise AuthError("Token claim 'exp' must be a number")
        except jwt.ExpiredSignatureError:
            raise AuthError("Token expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError("Invalid token signature") from None
        except jwt.InvalidAudienceError:
            raise AuthError("Invalid token audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("Invalid token issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"Token is missing the '{exc.claim}' claim") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("Token algorithm not allowed") from None
        except jwt.DecodeError:
            raise AuthError("Malformed token") from None
        except jwt.PyJWTError:  # InvalidTokenError, and InvalidKeyError for a key of the wrong kind
            raise AuthError("Invalid token") from None
        return VerifiedToken(
            _text_claim(claims, "sub", required=True) or "",
            _plan_claim(claims, self.plan_claim),
            _text_claim(claims, "email") if isinstance(claims.get("email"), str) else None,
        )


def _text_claim(claims: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """A claim that must be text: a string, non-empty when required, encodable (a JSON string
    may hold a lone UTF-16 surrogate, which no key, log line or event can carry)."""
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise AuthError(f"Token claim '{name}' must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthError(f"Token claim '{name}' is not valid text") from None
    return value


def _plan_claim(claims: dict[str, Any], path: str) -> str | None:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuthError(f"Token claim '{path}' must be a string")
    return _text_claim({path: value}, path)


def mint_token(
    key: str,
    user_id: str,
    plan: str,
    email: str | None = None,
    ttl: int = 3600,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """An HS256 client token for `user_id` on `plan`, valid for `ttl` seconds."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "plan": plan, "iat": now, "exp": now + ttl}
    if email:
        claims["email"] = email
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm="HS256")
