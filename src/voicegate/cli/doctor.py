"""`voicegate doctor`: diagnose the Redis connection step by step (contract §6).

One line per step: URL, DNS, TCP, TLS, AUTH, PING, version, latency, then the server's clients
and memory. The first failing step stops the run with the likely cause and the fix, taken from
`_GUIDE`, the troubleshooting section of the deployment guide. Every line goes through
`mask_text` with the URL's passwords as known secrets: no password is ever printed.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TextIO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from voicegate._redact import mask_text, mask_url
from voicegate.cli._doctor_guide import GUIDE as _GUIDE  # failure -> (likely cause, fix)
from voicegate.ops.health import THRESHOLDS
from voicegate.storage.target import RedisTarget, secrets_in

__all__ = ["run"]

OK, FAIL, WARN, INFO = "✅", "❌", "⚠️", "ℹ️"
# The deployment guide's monitoring thresholds, the same as the health endpoint's alerts.
LATENCY_THRESHOLD_MS = THRESHOLDS["redis_latency_ms"]
MEMORY_THRESHOLD = THRESHOLDS["redis_memory_percent"] / 100
CLIENTS_THRESHOLD = THRESHOLDS["redis_connected_clients"]
_PING = b"*1\r\n$4\r\nPING\r\n"
_RESP_TYPES = b"+-:$*_,#!=(%~|>"  # the first byte of any RESP2/RESP3 reply
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

_HINTS = {
    "DB index": "use a db number below the server's `databases` setting in REDIS_URL",
    "max number of clients": "raise maxclients, or find the client that leaks connections",
    "DENIED": "set a password on Redis (requirepass), or turn protected-mode off",
    "loading": "wait until Redis has loaded its dataset, then run the doctor again",
    "no permissions": "grant the ACL user +ping and +info (the health endpoint reads INFO too)",
}


class _StepFailed(Exception):
    def __init__(self, step: str, problem: str, cause: str, fix: str) -> None:
        super().__init__(problem)
        self.step, self.problem, self.cause, self.fix = step, problem, cause, fix


def run(url: str, out: TextIO, *, timeout: float = 3.0) -> int:
    """Diagnose the Redis at `url`, one line per step on `out`; every wait is `timeout` at most.

    Returns 0 when every step passes (warnings included), 1 at the first failing step.
    """
    doctor = _Doctor(out, timeout, secrets_in(url))
    try:
        doctor.check(url)
    except _StepFailed as failed:
        doctor.say(FAIL, failed.step, failed.problem)
        # The guide's own words hold no secret, and masking would blur its example URLs.
        out.write(f"   Likely cause: {failed.cause}.\n   Fix: {failed.fix}.\n")
        return 1
    except Exception as exc:  # an unforeseen failure is still one masked line, not a traceback
        doctor.say(FAIL, doctor.step, f"unexpected error: {type(exc).__name__}: {exc}")
        return 1
    doctor.line("All checks passed: voicegate can use this Redis.")
    return 0


class _Doctor:
    def __init__(self, out: TextIO, timeout: float, secrets: tuple[str, ...]) -> None:
        self.out, self.timeout, self.secrets = out, timeout, secrets
        self.step = "URL"

    def line(self, text: str) -> None:
        self.out.write(mask_text(text, self.secrets) + "\n")

    def say(self, icon: str, step: str, text: str) -> None:
        self.line(f"{icon} {step}: {text}")

    def fail(self, problem: str, failure: str, **fields: object) -> _StepFailed:
        cause, fix = _GUIDE[failure]
        return _StepFailed(self.step, problem, cause.format(**fields), fix.format(**fields))

    def check(self, url: str) -> None:
        target = self.parse(url)
        self.reach(target)
        if target.topology == "sentinel":
            host, port = self.sentinel(target)
            target = self.parse(target.node_url(host, port, drop="sentinel_password"), quiet=True)
            self.reach(target)
        self.tls(target)
        node = target.node_url(*target.nodes[0]) if target.nodes else url
        client = redis.Redis.from_url(
            node,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # one attempt: the doctor reports, it does not retry
        )
        try:
            self.auth_and_ping(client, target.password is not None)
            mode = self.server(client, target.topology)
        except redis.RedisError as exc:  # after a good PING: an ACL without +info, a timeout
            raise self.refused(exc) from None
        finally:
            client.close()
        if target.topology == "cluster":
            self.cluster(node, mode)

    def parse(self, url: str, *, quiet: bool = False) -> RedisTarget:
        self.step = "URL"
        try:
            target = RedisTarget.parse(url)
            if target.options.get("ssl_cert_reqs", "required") not in _CERT_REQS:
                raise ValueError("ssl_cert_reqs must be none, optional or required")
            ssl_options = sorted(k for k in target.options if k.startswith("ssl_"))
            if ssl_options and not target.tls:
                problem = f"{', '.join(ssl_options)} given but the URL is {target.scheme}://"
                raise self.fail(problem, "ssl_on_plain")
            if target.topology in ("standalone", "unix"):  # redis-py rejects unknown options
                redis.Redis.from_url(url).connection_pool.make_connection()
        except (TypeError, ValueError) as exc:
            raise self.fail(f"cannot use {mask_url(url)}: {exc}", "url") from None
        if not quiet:
            where = target.path or ", ".join(f"{h}:{p}" for h, p in target.nodes)
            tls = "TLS" if target.tls else "no TLS"
            self.say(OK, "URL", f"{target.masked} ({_kind(target)}, {tls}, {where})")
        return target

    def reach(self, target: RedisTarget) -> None:
        if not target.nodes:
            self.say(INFO, "DNS", "not needed for a unix socket")
            self.step = "Socket"
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                try:
                    sock.connect(target.path)
                except OSError as exc:
                    raise self.fail(f"cannot connect to {target.path}: {exc}", "socket") from None
            self.say(OK, "Socket", f"{target.path} accepts connections")
            return
        for host, _ in target.nodes:
            self.dns(host)
        for host, port in target.nodes:
            self.tcp(host, port)

    def dns(self, host: str) -> None:
        self.step = "DNS"
        pool = ThreadPoolExecutor(max_workers=1)  # getaddrinfo has no timeout of its own
        try:
            resolving = pool.submit(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
            addresses = sorted({str(info[4][0]) for info in resolving.result(self.timeout)})
        except (OSError, FutureTimeout) as exc:
            reason = (
                f"no answer within {self.timeout:g} s" if isinstance(exc, FutureTimeout) else exc
            )
            raise self.fail(f"cannot resolve {host} ({reason})", "dns") from None
        finally:
            pool.shutdown(wait=False)
        self.say(OK, "DNS", f"{host} → {', '.join(addresses)}")

    def tcp(self, host: str, port: int) -> None:
        self.step = "TCP"
        start = time.perf_counter()
        try:
            socket.create_connection((host, port), timeout=self.timeout).close()
        except ConnectionRefusedError:
            raise self.fail(f"{host}:{port} refused the connection", "refused", port=port) from None
        except OSError as exc:  # a timeout, no route to host, network unreachable
            reason = (
                f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) else exc
            )
            raise self.fail(
                f"cannot reach {host}:{port}: {reason}", "unreachable", port=port
            ) from None
        elapsed = (time.perf_counter() - start) * 1000
        self.say(OK, "TCP", f"{host}:{port} accepts connections ({elapsed:.1f} ms)")

    def tls(self, target: RedisTarget) -> None:
        self.step = "TLS"
        if not target.nodes:
            self.say(INFO, "TLS", "not used on a unix socket")
            return
        host, port = target.nodes[0]
        if not target.tls:  # a TLS port resets a plain-text PING: check that one answers
            reply = self.plain_ping(host, port)
            if reply[:1] and reply[:1] in _RESP_TYPES:
                self.say(
                    INFO, "TLS", f"not used ({target.scheme}://), the server answers in plain text"
                )
                return
            if self.handshake(host, port, _context({"ssl_cert_reqs": "none"})) is not None:
                problem = f"the server expects TLS but the URL is {target.scheme}://"
                raise self.fail(problem, "tls_required")
            self.step = "PING"
            problem = f"{host}:{port} does not answer in the Redis protocol (reply: {reply[:24]!r})"
            raise self.fail(problem, "not_redis")
        try:
            context = _context(target.options)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise self.fail(f"cannot load the certificate files: {exc}", "tls") from None
        try:
            version = self.handshake(host, port, context, raise_errors=True)
        except ssl.SSLCertVerificationError as exc:
            problem = f"the server certificate was rejected: {exc.verify_message}"
            raise self.fail(problem, "certificate") from None
        except OSError as exc:
            if self.plain_ping(host, port)[:1] in (b"+", b"-"):
                problem = "TLS expected but the server does not speak TLS"
                raise self.fail(problem, "tls_expected", scheme=target.scheme) from None
            if "CERTIFICATE_REQUIRED" in str(exc).upper():
                raise self.fail("the server asks for a client certificate", "client_cert") from None
            raise self.fail(f"TLS handshake failed: {exc}", "tls") from None
        if context.verify_mode == ssl.CERT_NONE:
            self.say(
                WARN, "TLS", f"{version} but the certificate is NOT verified (ssl_cert_reqs=none)"
            )
        else:
            what = "certificate and host name" if context.check_hostname else "certificate"
            self.say(OK, "TLS", f"{version} handshake OK, {what} verified")

    def handshake(
        self, host: str, port: int, context: ssl.SSLContext, *, raise_errors: bool = False
    ) -> str | None:
        """The TLS version after a handshake and a PING (a client-cert refusal shows there)."""
        try:
            with (
                socket.create_connection((host, port), timeout=self.timeout) as raw,
                context.wrap_socket(raw, server_hostname=host) as sock,
            ):
                sock.sendall(_PING)
                if not sock.recv(64):
                    raise ConnectionResetError("the server closed the TLS connection")
                return sock.version()
        except OSError:
            if raise_errors:
                raise
            return None

    def plain_ping(self, host: str, port: int) -> bytes:
        """The first bytes a plain-text PING gets back; empty on a reset, a close or silence."""
        try:
            with socket.create_connection((host, port), timeout=self.timeout) as sock:
                sock.sendall(_PING)
                return sock.recv(64)
        except OSError:
            return b""

    def auth_and_ping(self, client: redis.Redis, has_password: bool) -> None:
        self.step = "AUTH"
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            if has_password:
                raise self.fail(
                    f"the server rejected the credentials ({exc})", "wrongpass"
                ) from None
            problem = "the server requires a password and REDIS_URL has none (NOAUTH)"
            raise self.fail(problem, "noauth") from None
        except redis.RedisError as exc:
            self.step = "PING"
            raise self.refused(exc) from None
        self.say(OK, "AUTH", "password accepted" if has_password else "no password required")
        self.say(OK, "PING", "PONG")

    def refused(self, exc: redis.RedisError) -> _StepFailed:
        hint = next((h for k, h in _HINTS.items() if k in str(exc)), "read the server's log")
        return self.fail(f"{type(exc).__name__}: {exc}", "refused_command", hint=hint)

    def server(self, client: redis.Redis, kind: str) -> str:
        """Version, latency, clients and memory; returns the server's redis_mode."""
        self.step = "Version"
        info: dict[str, Any] = client.info()
        role = info.get("role", "master")
        mode = info.get("redis_mode", "standalone")
        self.say(OK, "Version", f"Redis {info.get('redis_version', '?')} ({mode}, {role})")
        if role != "master":
            self.say(WARN, "Role", "a replica: writes fail with READONLY, use the master's URL")
        if mode == "cluster" and kind != "cluster":
            self.say(WARN, "Mode", "a cluster node: use redis+cluster:// so keys reach their node")
        self.step = "Latency"
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - start) * 1000)
        median = statistics.median(samples)
        slow = median > LATENCY_THRESHOLD_MS
        text = f"{median:.2f} ms (median of {len(samples)} PINGs)"
        if slow:
            text += f", above {LATENCY_THRESHOLD_MS:g} ms: run voicegate closer to Redis"
        self.say(WARN if slow else OK, "Latency", text)
        clients = int(info.get("connected_clients", 0))
        many = clients > CLIENTS_THRESHOLD
        text = f"{clients} connected" + (f", above {CLIENTS_THRESHOLD}" if many else "")
        self.say(WARN if many else INFO, "Clients", text)
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        text = f"{info.get('used_memory_human', '?')} used"
        if not limit:
            self.say(INFO, "Memory", f"{text}, no maxmemory limit")
            return str(mode)
        share = used / limit
        text += f" of {info.get('maxmemory_human', limit)} ({share:.0%})"
        if share > MEMORY_THRESHOLD:
            text += f", above {MEMORY_THRESHOLD:.0%}: raise maxmemory or free memory"
        self.say(WARN if share > MEMORY_THRESHOLD else OK, "Memory", text)
        return str(mode)

    def sentinel(self, target: RedisTarget) -> tuple[str, int]:
        self.step = "Sentinel"
        service = target.service_name or ""
        timeouts = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        password = {"password": target.options.get("sentinel_password")}
        sentinels = redis.Sentinel(
            list(target.nodes),
            sentinel_kwargs={**timeouts, **password},
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
        )
        try:
            host, port = sentinels.discover_master(service)
        except redis.RedisError as exc:
            raise self.fail(f"no master for {service!r}: {exc}", "sentinel") from None
        finally:
            for client in sentinels.sentinels:
                client.close()
        self.say(OK, "Sentinel", f"master {service!r} is at {host}:{port}")
        return str(host), int(port)

    def cluster(self, url: str, mode: str) -> None:
        self.step = "Cluster"
        if mode != "cluster":  # before RedisCluster, which would leak its probe connection
            raise self.fail(f"the server runs in {mode} mode, not in cluster mode", "cluster")
        timeouts = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        try:
            cluster = redis.RedisCluster.from_url(url, **timeouts)
            try:
                info = cluster.cluster_info()
            finally:  # RedisCluster.close() leaves the nodes' own pools open
                for cluster_node in cluster.get_nodes():  # type: ignore[no-untyped-call]
                    if cluster_node.redis_connection is not None:
                        cluster_node.redis_connection.connection_pool.disconnect()
                cluster.close()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise self.fail(f"{type(exc).__name__}: {exc}", "cluster") from None
        state, slots = info.get("cluster_state"), info.get("cluster_slots_ok")
        text = (
            f"state {state}, {slots}/16384 slots ok, nodes known: {info.get('cluster_known_nodes')}"
        )
        if state != "ok":
            raise self.fail(text, "cluster")
        self.say(OK, "Cluster", text)


def _context(query: Mapping[str, str]) -> ssl.SSLContext:
    """The SSL context redis-py's SSLConnection builds from the same URL options."""
    context = ssl.create_default_context()
    reqs = _CERT_REQS[query.get("ssl_cert_reqs", "required")]
    check = query.get("ssl_check_hostname", "true").upper() not in ("0", "F", "FALSE", "N", "NO")
    context.check_hostname = check and reqs != ssl.CERT_NONE
    context.verify_mode = reqs
    if query.get("ssl_certfile") or query.get("ssl_keyfile"):
        context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
    if query.get("ssl_ca_certs") or query.get("ssl_ca_path"):
        context.load_verify_locations(query.get("ssl_ca_certs"), query.get("ssl_ca_path"))
    return context


def _kind(target: RedisTarget) -> str:
    """The topology as the URL line names it (a unix socket is a standalone server)."""
    return "standalone" if target.topology == "unix" else target.topology
