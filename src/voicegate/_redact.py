"""Masking of secrets in URLs and free text, used wherever something is shown to an operator."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# The query options that may carry credentials in a Redis URL (redis-py reads them all).
_SECRET_QUERY_KEYS = frozenset({"password", "sentinel_password", "token", "ssl_password"})

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@"
)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_TOKEN_PARAM = re.compile(r"(?i)([?&](?:token|access_token|api_key|key)=)[^&\s\"']+")
_OPENAI_KEY = re.compile(r"sk-[A-Za-z0-9_-]{8,}")


def mask_url(url: str) -> str:
    """Return `url` with its password replaced by `***`.

    A URL with a password and no user name gets the user name `default`, as Redis does, so
    operators see `redis://default:***@host:port` (database 0, the default, is not shown).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, hosts = netloc.rpartition("@")
        user, sep, _password = credentials.partition(":")
        if sep:
            netloc = f"{user or 'default'}:{MASK}@{hosts}"
        elif not user:
            netloc = hosts
    query = parts.query
    if query:
        pairs = []
        for pair in query.split("&"):
            key, eq, _value = pair.partition("=")
            pairs.append(f"{key}={MASK}" if eq and key.lower() in _SECRET_QUERY_KEYS else pair)
        query = "&".join(pairs)
    if not netloc:  # unix:///path: urlunsplit would drop the empty authority
        return f"{parts.scheme}://{parts.path}" + (f"?{query}" if query else "")
    path = "" if parts.path in ("/", "/0") else parts.path  # database 0 is the default
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove credentials from free text: URL passwords, bearer tokens, JWTs, API keys.

    `secrets` are literal values known to the caller (the configured passwords and keys) that are
    removed wherever they occur, whatever their shape.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user'] or 'default'}:{MASK}@", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    text = _TOKEN_PARAM.sub(rf"\1{MASK}", text)
    text = _JWT.sub(MASK, text)
    return _OPENAI_KEY.sub(MASK, text)
