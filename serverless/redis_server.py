"""An embedded redis-server on a free port: `podq dev` runs one when PODQ_REDIS_URL is unset,
and the test suite and benchmarks start theirs with the same class (never the shared 6379).
Tests of a secured Redis start it with a password, ACL users or TLS only (RedisProcess args)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from serverless.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS-only redis-server: its certificate and key, and the CA it trusts for
    client certificates (and that clients trust for it). `client_cert` / `client_key` (signed by
    the same CA) are what a client presents when the server asks (tls-auth-clients)."""

    cert: str
    key: str
    ca: str
    client_cert: str | None = None
    client_key: str | None = None


class RedisProcess:
    """A redis-server child process on 127.0.0.1.

    Args:
        extra: more redis-server arguments (`"--maxmemory", "10mb"`).
        port: the port (TCP, or TLS when `tls` is given); default a free one.
        password: `requirepass` for the default user.
        users: ACL rules, one string per user (`"podq on >pw ~podq:* +@all"`), given as
            `--user` arguments; `"default off"` turns the password-less default user off.
        tls: serve TLS only (`--port 0 --tls-port`), with these files.
        tls_auth_clients: `no`, `optional` or `yes` (client certificates).
    """

    def __init__(self, *extra: str, port: int | None = None, password: str | None = None,
                 users: Sequence[str] = (), tls: TLSFiles | None = None,
                 tls_auth_clients: str = "no") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "redis-server not found on PATH: install it (apt-get install redis-server, "
                "or `make test` does it) or point PODQ_REDIS_URL at a running Redis"
            )
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.dir = tempfile.mkdtemp(prefix="podq-redis-")
        listen = ["--port", str(self.port)]
        if tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", tls.cert,
                      "--tls-key-file", tls.key, "--tls-ca-cert-file", tls.ca,
                      "--tls-auth-clients", tls_auth_clients]
        secured = ["--requirepass", password] if password is not None else []
        for rule in users:
            secured += ["--user", *rule.split()]
        self.args = [binary, *listen, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", self.dir, *secured, *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL to reach this server as the default user (with its password and CA)."""
        return self.url_for(password=self.password)

    def url_for(self, user: str | None = None, password: str | None = None, tls_query: bool = True) -> str:
        """The URL for `user` / `password`; for a TLS server, rediss:// with `ssl_ca_certs` (and
        the client certificate, when the server asks for one) unless `tls_query` is False."""
        creds = ""
        if user is not None or password is not None:
            creds = quote(user or "", safe="") + (f":{quote(password, safe='')}" if password is not None else "") + "@"
        if self.tls is None:
            return f"redis://{creds}127.0.0.1:{self.port}/0"
        query = ""
        if tls_query:
            params = {"ssl_ca_certs": self.tls.ca}
            if self.tls_auth_clients != "no" and self.tls.client_cert and self.tls.client_key:
                params |= {"ssl_certfile": self.tls.client_cert, "ssl_keyfile": self.tls.client_key}
            query = "?" + urlencode(params, safe="/")
        return f"rediss://{creds}127.0.0.1:{self.port}/0{query}"

    def start(self) -> RedisProcess:
        log = open(Path(self.dir) / "redis.log", "wb")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self._answers_ping():
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop(keep_dir=True)
        raise ConfigError(f"redis-server did not start on port {self.port}; see {self.dir}/redis.log")

    def _answers_ping(self) -> bool:
        """One PING over a fresh connection (TLS when the server is TLS). A server that asks for
        a password answers -NOAUTH: up all the same."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            if self.tls is None:
                return self._ping(raw)
            context = ssl.create_default_context(cafile=self.tls.ca)
            context.check_hostname = False
            if self.tls.client_cert and self.tls.client_key:
                context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
            with context.wrap_socket(raw) as s:
                return self._ping(s)

    @staticmethod
    def _ping(s: socket.socket) -> bool:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))

    def stop(self, keep_dir: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
