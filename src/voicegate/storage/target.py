"""`REDIS_URL`, parsed once: which topology, which nodes, which credentials.

One parser and a scheme registry (as limits' `_storage_scheme.py` has one parser and a registry
of storages): each scheme is an entry saying what its URL means, so the settings, the doctor and
the client factory read the same answer instead of each splitting the URL its own way.

Every `ValueError` raised here names what is wrong and never contains the URL: a password with
an unencoded `#` or `/` makes the rest of the URL land in odd places, and error messages end up
in logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit

from voicegate._redact import MASK

__all__ = ["SCHEMES", "RedisTarget", "Topology", "secrets_in"]

Topology = Literal["standalone", "unix", "sentinel", "cluster"]

# Query options of a Redis URL that carry credentials (redis-py reads them all).
_SECRET_OPTIONS = frozenset({"password", "sentinel_password", "ssl_password", "token"})


@dataclass(frozen=True, slots=True)
class _Scheme:
    """What a URL scheme means: its topology, whether it speaks TLS, its default port."""

    topology: Topology
    tls: bool
    default_port: int = 6379


# The schemes of contract §1, in the order the configuration error lists them.
SCHEMES: dict[str, _Scheme] = {
    "redis": _Scheme("standalone", tls=False),
    "rediss": _Scheme("standalone", tls=True),
    "unix": _Scheme("unix", tls=False),
    "redis+sentinel": _Scheme("sentinel", tls=False, default_port=26379),
    "rediss+sentinel": _Scheme("sentinel", tls=True, default_port=26379),
    "redis+cluster": _Scheme("cluster", tls=False),
    "rediss+cluster": _Scheme("cluster", tls=True),
}


@dataclass(frozen=True)
class RedisTarget:
    """One Redis deployment as a `REDIS_URL` names it. Build it with `RedisTarget.parse`.

    `url` and `password` hold the secret: show `masked`, never `url`; `repr()` is masked too.
    """

    url: str = field(repr=False)
    scheme: str
    topology: Topology
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # IPv6 hosts without brackets
    path: str  # the socket of a unix:// URL, else ""
    db: int
    service_name: str | None  # sentinel
    username: str | None
    password: str | None = field(repr=False)  # percent-decoded
    options: Mapping[str, str] = field(repr=False)  # the query, last value of each option
    _masked: str = field(repr=False, compare=False)
    _secrets: tuple[str, ...] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        """Read `url`; `ValueError` (with a message that never contains it) when it is wrong."""
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed `[`: urllib's message is fine, ours is clearer
            raise ValueError("not a URL: write an IPv6 host in brackets, e.g. [::1]:6379") from None
        scheme = parts.scheme.lower()
        kind = SCHEMES.get(scheme)
        if kind is None:
            raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
        credentials, _, hosts = parts.netloc.rpartition("@")
        user_text, _, password_text = credentials.partition(":")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        # As redis-py: credentials in the URL's authority win over those in the query.
        username = unquote(user_text) or options.get("username") or None
        password = unquote(password_text) or options.get("password") or None
        path, service, db_text = "", None, options.get("db", "")
        if kind.topology == "unix":
            path = unquote(parts.path)
            if not path.strip("/"):
                raise ValueError("no socket path: use unix:///path/to/redis.sock")
            nodes: tuple[tuple[str, int], ...] = ()
        else:
            nodes = tuple(_node(text, kind.default_port) for text in hosts.split(","))
            if len(nodes) > 1 and kind.topology != "sentinel":
                raise ValueError("several hosts are only allowed in redis+sentinel:// URLs")
            segments = [s for s in parts.path.split("/") if s]
            if kind.topology == "sentinel":
                if not segments:
                    raise ValueError("no service name: use redis+sentinel://host:port/service_name")
                service, segments = unquote(segments[0]), segments[1:]
            if len(segments) > 1:
                raise ValueError("the path must be a database number, e.g. /0")
            db_text = db_text or (segments[0] if segments else "")
        if db_text and not (db_text.isascii() and db_text.isdigit()):
            raise ValueError("the database must be a number, e.g. /0")
        return cls(
            url=url,
            scheme=scheme,
            topology=kind.topology,
            tls=kind.tls,
            nodes=nodes,
            path=path,
            db=int(db_text or 0),
            service_name=service,
            username=username,
            password=password,
            options=options,
            _masked=_mask(parts.scheme, parts.netloc, parts.path, parts.query),
            _secrets=_secrets(password_text, parts.query),
        )

    @property
    def masked(self) -> str:
        """The URL with its password (and secret query options) replaced by `***`, database 0
        hidden, as operators see it: `redis://default:***@host:port`."""
        return self._masked

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret in the URL, raw and percent-decoded, for scrubbing free text."""
        return self._secrets

    def node_url(self, host: str, port: int, *, drop: str = "") -> str:
        """A redis:// or rediss:// URL for one node, with this URL's credentials and options
        (but `drop`), for redis-py's standalone client."""
        auth = ""
        if self.username or self.password:
            auth = quote(self.username or "", safe="")
            auth += f":{quote(self.password, safe='')}@" if self.password else "@"
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        db = "" if self.topology == "cluster" else f"/{self.db}"
        query = urlencode({k: v for k, v in self.options.items() if k != drop})
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{netloc}{db}" + (f"?{query}" if query else "")

    def __repr__(self) -> str:
        return f"RedisTarget({self.masked!r})"

    def __hash__(self) -> int:  # `options` is a dict: hash what identifies the target
        return hash(self.url)


def secrets_in(url: str) -> tuple[str, ...]:
    """The secrets of `url` even when it does not parse (the doctor masks what it prints with
    them before it knows whether the URL is valid)."""
    try:
        return RedisTarget.parse(url).secrets
    except ValueError:
        pass
    # Unparsed, a password may hold the `#`, `/` or `?` that broke the URL: take everything
    # between the scheme and the last `@`.
    credentials = url.partition("://")[2].rpartition("@")[0]
    return _secrets(credentials.partition(":")[2], url.partition("?")[2])


def _node(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` -> (host, port)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("write an IPv6 host in brackets, e.g. [::1]:6379")
        colon, port = bool(rest), rest[1:]
    elif text.count(":") > 1:
        raise ValueError("write an IPv6 host in brackets, e.g. [::1]:6379")
    else:
        host, sep, port = text.partition(":")
        colon = bool(sep)
    if not host:
        raise ValueError("no host in the URL")
    if colon and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        # Not the value: a password with an unencoded `#` or `/` would land here.
        raise ValueError("port must be a number from 1 to 65535")
    return unquote(host), int(port) if colon else default_port


def _mask(scheme: str, netloc: str, path: str, query: str) -> str:
    credentials, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _password = credentials.partition(":")
        if colon:  # Redis's user name when only a password is given is `default`
            netloc = f"{user or 'default'}:{MASK}@{hosts}"
        elif not user:
            netloc = hosts
    if query:
        pairs = []
        for pair in query.split("&"):
            key, eq, _value = pair.partition("=")
            pairs.append(f"{key}={MASK}" if eq and key.lower() in _SECRET_OPTIONS else pair)
        query = "?" + "&".join(pairs)
    if scheme.lower() != "unix" and path in ("/", "/0"):
        path = ""  # database 0 is the default
    return f"{scheme}://{netloc}{path}{query}"


def _secrets(password_text: str, query: str) -> tuple[str, ...]:
    """The password and the secret query options, as written and as decoded."""
    found = [password_text, unquote(password_text)]
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote_plus(key).lower() in _SECRET_OPTIONS:
            found += [value, unquote(value), unquote_plus(value)]
    return tuple(dict.fromkeys(s for s in found if s))
