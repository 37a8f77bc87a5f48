"""What `voicegate doctor` says when a step fails: the likely cause and the fix, by failure,
in the words of the deployment guide's troubleshooting section."""

from __future__ import annotations

GUIDE: dict[str, tuple[str, str]] = {
    "url": (
        "REDIS_URL is malformed, or has a scheme or option redis-py does not know",
        "write it as redis://[user:password@]host:port/db, rediss://… for TLS, "
        "redis+sentinel://host:port[,host:port]/service or redis+cluster://host:port",
    ),
    "ssl_on_plain": (
        "ssl_* options only apply to TLS connections",
        "use rediss:// if the server speaks TLS, else remove the ssl_* options",
    ),
    "dns": (
        "the host name is misspelled, unknown to this network's DNS (e.g. a Docker or "
        "Kubernetes service name used from outside), or DNS is down",
        "check the host name in REDIS_URL and this machine's DNS, or use the server's IP",
    ),
    "refused": (
        "the port is closed or nothing is listening on it (Redis not running, wrong "
        "port, bound to another interface), or a firewall rejects the connection",
        "start Redis or correct the port in REDIS_URL; check bind/port in redis.conf and "
        "that the firewall or security group lets this machine reach port {port}",
    ),
    "unreachable": (
        "a firewall or security group drops the packets, or the host or the network is wrong",
        "check the host in REDIS_URL and open port {port} to this machine",
    ),
    "socket": (
        "Redis is not running, not listening on this socket, or this user may not open it",
        "check unixsocket and unixsocketperm in redis.conf and the path in REDIS_URL",
    ),
    "tls_expected": (
        "the URL is {scheme}:// but the port answers plain-text Redis",
        "use redis:// in REDIS_URL, or enable TLS on the server (tls-port)",
    ),
    "tls_required": (
        "the port is a TLS port (tls-port): a plain-text PING gets no Redis reply",
        "use rediss:// in REDIS_URL, with ssl_ca_certs=/path/to/ca.pem if the "
        "server certificate is not from a public CA",
    ),
    "certificate": (
        "the certificate is not signed by a CA this client trusts, or not for this host",
        "set ssl_ca_certs=/path/to/ca.pem (the CA that signed the server certificate)"
        " and connect with a host name the certificate lists",
    ),
    "client_cert": (
        "the server requires client certificates (tls-auth-clients yes)",
        "add ssl_certfile=/path/to/client.crt&ssl_keyfile=/path/to/client.key",
    ),
    "tls": (
        "a certificate file is missing or not PEM, or the server's TLS settings differ",
        "check the ssl_* options in REDIS_URL against the server's tls-* settings",
    ),
    "not_redis": ("another service listens on this port", "check the port in REDIS_URL"),
    "wrongpass": (
        "the password (or the user name) in REDIS_URL is wrong",
        "check the password in REDIS_URL against requirepass or the ACL user; "
        "percent-encode @ : / # in it",
    ),
    "noauth": (
        "requirepass (or an ACL) is set on the server and REDIS_URL has no password",
        "add the password to REDIS_URL: redis://default:<password>@host:port/0",
    ),
    "refused_command": ("the server refused the connection or the command", "{hint}"),
    "sentinel": (
        "the service name differs from `sentinel monitor <name>`, the master is down, "
        "or the sentinels require a password",
        "check the name after the last / in REDIS_URL, and sentinel_password",
    ),
    "cluster": (
        "the server is not a healthy cluster node",
        "use redis:// for a standalone server, or repair the cluster (CLUSTER INFO)",
    ),
}
