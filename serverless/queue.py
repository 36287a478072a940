"""The seam around arq: connections to Redis, and the doorbell idle workers block on.

podq keeps arq's model of a queue (one sorted set of job ids per queue, scored by the time a job
may run, ids deduplicated on enqueue) and uses arq's connection layer (`RedisSettings` and
`create_pool`), with its own URL parsing (arq's `from_dsn` drops percent-encoded passwords and
every TLS option, see `redis_settings`) and its own retries (none for a refused password or a
TLS error: retrying cannot fix those, and the error says which setting does). It does not use arq's polling `Worker`, because every limit listed in shared/reference/arq-and-queues.md
section 1.11 would land on our users:

- pickup bound to `poll_delay` (0.5 s)     -> workers block on a per-endpoint doorbell list
                                              (BLPOP); a submit rings it in the same function
- running jobs hide new ones (queue_read_limit) -> a take moves the job from the queue zset to
                                              a leases zset, so the queue holds queued jobs only
- pickle by default                         -> JSON (msgspec) only, see codec.py
- no heartbeat, TTL = max job timeout + 10 s -> leases renewed every heartbeat, reaped on expiry
- last writer wins on results               -> every worker write is fenced by the attempt number

This is the only module that imports arq: replacing its connection layer changes one file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from urllib.parse import parse_qs, unquote, urlsplit

import redis as redis_sync
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis, SSLConnection
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serverless import clock, keys
from serverless.errors import ConfigError, RedisUnavailable, redact_text, redact_url

log = logging.getLogger("podq.queue")

# The TLS query parameters of a rediss:// URL, spelled as redis-py's from_url reads them.
TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_TLS_FILES = {"ssl_ca_certs": "PODQ_REDIS_TLS_CA", "ssl_certfile": "PODQ_REDIS_TLS_CERT",
              "ssl_keyfile": "PODQ_REDIS_TLS_KEY"}
_CERT_REQS = ("required", "optional", "none")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
CONNECT_TIMEOUT_S = 2.0
CONNECT_ATTEMPTS = 4  # the first try and 3 retries, RETRY_DELAY_S apart
RETRY_DELAY_S = 0.5
# The job store's operations are Redis 7 Functions (serverless/functions.py); Valkey 7.2+ has them.
MIN_VERSION = (7, 0, 0)
NEEDS_REDIS_7 = "podq needs Redis >= 7 (Functions)"
UPGRADE = "upgrade it, or point PODQ_REDIS_URL at a Redis 7 (or Valkey 7.2 or later)"
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def redis_settings(url: str) -> RedisSettings:
    """arq's RedisSettings for `url`: redis://, rediss:// (TLS) or unix:// URL.

    Replaces arq's `RedisSettings.from_dsn`, which drops what a secured Redis needs: it does not
    percent-decode the user and password (a password with `@` or `/` must be encoded in a URL)
    and ignores every query parameter but `db`, so a rediss:// URL could not name its CA or a
    client certificate. Here the query takes redis-py's names: `ssl_ca_certs`, `ssl_certfile`,
    `ssl_keyfile`, `ssl_cert_reqs` (required | optional | none) and `ssl_check_hostname`
    (default true when certificates are required). Raises ConfigError on anything else.
    """
    shown = redact_url(url)
    try:
        conf = urlsplit(url)
        port = conf.port
    except ValueError as e:
        raise ConfigError(f"PODQ_REDIS_URL {shown!r} is malformed ({e}); "
                          "use redis://[[user]:password@]host:port/db") from e
    if conf.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"PODQ_REDIS_URL {shown!r} must start with redis://, rediss:// (TLS) or unix://")
    query = {name: values[-1] for name, values in parse_qs(conf.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - {"db", *TLS_PARAMS})
    if unknown:
        raise ConfigError(f"PODQ_REDIS_URL has unknown query parameter(s) {', '.join(unknown)}; "
                          f"podq reads db, {', '.join(TLS_PARAMS)}")
    tls = conf.scheme == "rediss"
    given = [name for name in TLS_PARAMS if name in query]
    if given and not tls:
        raise ConfigError(f"{', '.join(given)} (PODQ_REDIS_URL or PODQ_REDIS_TLS_*) need TLS: "
                          f"use a rediss:// URL, not {conf.scheme}://")
    for name, var in _TLS_FILES.items():
        if name in query and not os.path.isfile(query[name]):
            raise ConfigError(f"TLS file {query[name]!r} ({name} in PODQ_REDIS_URL, or {var}) "
                              "does not exist; fix the path")
    cert_reqs = query.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in _CERT_REQS:
        raise ConfigError(f"ssl_cert_reqs={cert_reqs!r} in PODQ_REDIS_URL: use one of {', '.join(_CERT_REQS)}")
    check_hostname = _BOOLS.get(query.get("ssl_check_hostname", "").lower(), cert_reqs == "required")
    db = query.get("db") or (conf.path.strip("/") if conf.scheme != "unix" else "") or "0"
    try:
        database = int(db)
    except ValueError as e:
        raise ConfigError(f"PODQ_REDIS_URL {shown!r}: the database must be a number "
                          "(redis://host:6379/0)") from e
    return RedisSettings(
        host=conf.hostname or "localhost", port=port or 6379,
        unix_socket_path=conf.path if conf.scheme == "unix" else None, database=database,
        username=unquote(conf.username) if conf.username else None,
        password=unquote(conf.password) if conf.password is not None else None,
        ssl=tls, ssl_ca_certs=query.get("ssl_ca_certs"), ssl_certfile=query.get("ssl_certfile"),
        ssl_keyfile=query.get("ssl_keyfile"), ssl_cert_reqs=cert_reqs,
        ssl_check_hostname=check_hostname and cert_reqs != "none",
        conn_timeout=CONNECT_TIMEOUT_S, conn_retries=0,  # type: ignore[arg-type]
    )


def connection_error(url: str, e: BaseException) -> RedisUnavailable:
    """The error to raise for a failed connect: what went wrong and the setting that fixes it
    (the password never appears: URLs are redacted and the password is masked in causes)."""
    text = str(e)
    low = text.lower()
    tls = url.startswith("rediss://")
    if isinstance(e, AuthenticationError) or "noauth" in low or "wrongpass" in low:
        if "authentication required" in low:
            return RedisUnavailable(url, e, problem="requires a password",
                                    fix="put it in PODQ_REDIS_URL: redis://:password@host:port/0, "
                                        "or redis://user:password@host:port/0 for an ACL user")
        if "without any password configured" in low or "no password is set" in low:
            return RedisUnavailable(url, e, problem="has no password set but the URL gives one",
                                    fix="remove the password from PODQ_REDIS_URL or set requirepass")
        return RedisUnavailable(url, e, problem="refused the credentials",
                                fix="check the user and password in PODQ_REDIS_URL "
                                    "(redis://user:password@host:port/0; percent-encode @ : / in it)")
    if isinstance(e, NoPermissionError) or "noperm" in low:
        return RedisUnavailable(url, e, problem="denied a command to this ACL user",
                                fix="grant the rules in docs/security.md (ACL SETUSER)")
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return RedisUnavailable(url, e, problem="sent a TLS certificate podq does not trust",
                                fix="set PODQ_REDIS_TLS_CA (or ?ssl_ca_certs=) to the CA that signed it, "
                                    "and use the host name the certificate names")
    if "certificate required" in low or "peer did not return a certificate" in low:
        return RedisUnavailable(url, e, problem="requires a TLS client certificate",
                                fix="set PODQ_REDIS_TLS_CERT and PODQ_REDIS_TLS_KEY "
                                    "(or ?ssl_certfile=&ssl_keyfile=)")
    dropped = any(w in low for w in ("closed by server", "reset by peer", "connection lost"))
    if tls and dropped:  # TLS 1.3: a refused client certificate often arrives as a plain reset
        fix = ("check that the server trusts the CA of PODQ_REDIS_TLS_CERT, and the port"
               if "ssl_certfile=" in url else
               "if the server requires a TLS client certificate set PODQ_REDIS_TLS_CERT and "
               "PODQ_REDIS_TLS_KEY (or ?ssl_certfile=&ssl_keyfile=); else check the port")
        return RedisUnavailable(url, e, problem="closed the TLS connection", fix=fix)
    if tls and ("[ssl" in low or isinstance(e, ssl.SSLError) or _timed_out(e)):
        return RedisUnavailable(url, e, problem="did not complete a TLS handshake",
                                fix="check that Redis runs there and serves TLS on this port (else "
                                    "use redis://), and the PODQ_REDIS_TLS_* files")
    if not tls and dropped:
        return RedisUnavailable(url, e, problem="closed the connection",
                                fix="if the server requires TLS use rediss:// in PODQ_REDIS_URL; "
                                    "else check the port")
    return RedisUnavailable(url, e)


def _timed_out(e: BaseException) -> bool:
    return isinstance(e, (asyncio.TimeoutError, RedisTimeoutError, TimeoutError))


def _final(e: BaseException) -> bool:
    """Errors a retry cannot fix: credentials, permissions, TLS configuration."""
    if isinstance(e, (AuthenticationError, NoPermissionError, ssl.SSLError)):
        return True
    low = str(e).lower()  # "[ssl: ...]": OpenSSL's reason, as the driver wraps it
    return any(word in low for word in ("noauth", "wrongpass", "noperm", "[ssl",
                                        "certificate verify failed", "certificate required"))


async def connect(url: str) -> ArqRedis:
    """A pooled client for `url` (pass `settings.redis_dsn`); raises RedisUnavailable naming the
    URL (password masked) and the fix, or ConfigError for a malformed URL, a missing TLS file
    or a server older than Redis 7."""
    settings = redis_settings(url)
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            pool = await create_pool(settings)
        except (OSError, RedisError, asyncio.TimeoutError) as e:
            if _final(e) or attempt == CONNECT_ATTEMPTS - 1:
                raise connection_error(url, e) from e
            log.warning("Redis at %s not reachable yet (%s); retrying", redact_url(url),
                        redact_text(str(e), url))
            await asyncio.sleep(RETRY_DELAY_S)
            continue
        try:
            await require_functions(pool, url)
            await clock.sync(pool)  # this process's times go on Redis's clock
        except (OSError, RedisError, asyncio.TimeoutError) as e:
            await pool.aclose()
            raise connection_error(url, e) from e
        except ConfigError:
            await pool.aclose()
            raise
        return pool
    raise AssertionError("unreachable")


async def server_version(redis: Redis) -> tuple[int, int, int] | None:
    """The server's version: from HELLO (every ACL user may send it), else `INFO server`
    (Valkey's own version first); None when neither answers."""
    try:
        reply = await redis.execute_command("HELLO")
        fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))
        text = fields.get(b"version") or fields.get("version")
    except ResponseError:  # older than 6.0, or a proxy
        try:
            info = await redis.execute_command("INFO", "server")
        except ResponseError:
            return None
        text = info.get("valkey_version") or info.get("redis_version")
    found = _VERSION.match(text.decode() if isinstance(text, bytes) else str(text or ""))
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def check_version(version: tuple[int, int, int] | None, url: str) -> None:
    """Raise ConfigError when `version` is older than Redis 7 (no Functions); an unknown
    version (None) passes, and FUNCTION LOAD then says it."""
    if version is not None and version < MIN_VERSION:
        shown = ".".join(map(str, version))
        raise ConfigError(f"{NEEDS_REDIS_7}; this server is {shown} at {redact_url(url)}: {UPGRADE}")


async def require_functions(redis: Redis, url: str) -> None:
    """check_version for the server `redis` talks to."""
    check_version(await server_version(redis), url)


def server_url(redis: Redis) -> str:
    """Where `redis` connects, as a URL without credentials (for messages)."""
    pool = redis.connection_pool
    kw = pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


async def connect_single(url: str) -> Redis:
    """A client with a pool of one connection, for blocking reads and subscriptions."""
    pool = await connect(url)
    pool.connection_pool.max_connections = 1
    return pool


def connect_sync(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> redis_sync.Redis:
    """A synchronous client for `url` with the same credentials and TLS as `connect` (lazy:
    it connects on its first command)."""
    s = redis_settings(url)
    return redis_sync.Redis(
        host=str(s.host), port=s.port, unix_socket_path=s.unix_socket_path, db=s.database,
        username=s.username, password=s.password, ssl=s.ssl, ssl_ca_certs=s.ssl_ca_certs,
        ssl_certfile=s.ssl_certfile, ssl_keyfile=s.ssl_keyfile, ssl_cert_reqs=s.ssl_cert_reqs,
        ssl_check_hostname=s.ssl_check_hostname, socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
    )


async def wait_for_work(blocking: Redis, endpoint: str, timeout_s: float) -> bool:
    """Block until a submit rings the endpoint's doorbell (True) or `timeout_s` passes (False).
    Each wait holds a pool connection of `blocking` (the gateway's held job-take polls: many at
    once, each cancelled when its client leaves)."""
    return await blocking.blpop([keys.bell(endpoint)], timeout=timeout_s) is not None
